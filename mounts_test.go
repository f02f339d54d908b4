package dockerpool

import "testing"

func TestMountTableSendsTmpfsAndReadOnlyPlacesAwayFromTheArchiveAPI(t *testing.T) {
	const info = `725 639 0:70 / / ro,relatime master:301 - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=0
726 725 0:73 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
727 725 0:74 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
731 727 0:72 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
733 725 8:1 /var/lib/docker/volumes/v/_data /data rw,relatime - ext4 /dev/vda rw
734 725 0:75 / /tmp rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=65536k,mode=1777
735 725 8:1 /srv/my\040dir /srv/my\040dir rw,relatime - ext4 /dev/vda rw
`
	mt, err := parseMountinfo(info)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path  string
		write bool
		want  bool
	}{
		{"/tmp/x", true, false},       // a tmpfs: the archive would write under it
		{"/tmp", false, false},        // nor read it
		{"/dev/shm/a", true, false},   // Docker's own tmpfs
		{"/data/out", true, true},     // a volume
		{"/etc/passwd", false, true},  // the read-only root can be read
		{"/etc/passwd", true, false},  // not written
		{"/tmpfoo/x", true, false},    // not /tmp, but on the read-only root
		{"/srv/my dir/f", true, true}, // an escaped space in a mount point
		{"/proc/self/status", false, false},
	} {
		if got := mt.find(tc.path).archiveSees(tc.write); got != tc.want {
			t.Errorf("%s (write %v): archive sees it %v, want %v (mount %+v)", tc.path, tc.write, got, tc.want, mt.find(tc.path))
		}
	}
	if _, err := parseMountinfo("garbage\n"); err == nil {
		t.Error("garbage parsed")
	}
}
