package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Files the user and group names are looked up in.
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// execUser is who a command runs as.
type execUser struct {
	cred *syscall.Credential // nil: as the agent
	home string              // HOME for the command, if the user switches
}

// lookupUser resolves an ExecMsg.User as Docker does: "", "uid", "uid:gid",
// "name", "name:group" (and mixes). A name is looked up in /etc/passwd, a
// group name in /etc/group; a numeric uid need not be in /etc/passwd (its
// group is then 0). The supplementary groups are those of /etc/group that
// list the user's name.
func lookupUser(spec string) (execUser, error) {
	if spec == "" {
		return execUser{}, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	users, _ := readColonFile(passwdFile) // a missing file only limits names
	var (
		uid, gid uint32
		name     string
		home     = "/"
		found    bool
	)
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		uid = uint32(n)
		for _, f := range users {
			if len(f) >= 6 && f[2] == userPart {
				name, found = f[0], true
				if g, err := strconv.ParseUint(f[3], 10, 32); err == nil {
					gid = uint32(g)
				}
				home = f[5]
				break
			}
		}
	} else {
		for _, f := range users {
			if len(f) >= 6 && f[0] == userPart {
				u, err1 := strconv.ParseUint(f[2], 10, 32)
				g, err2 := strconv.ParseUint(f[3], 10, 32)
				if err1 != nil || err2 != nil {
					continue
				}
				uid, gid, name, home, found = uint32(u), uint32(g), f[0], f[5], true
				break
			}
		}
		if !found {
			return execUser{}, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
		}
	}
	groups, _ := readColonFile(groupFile)
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			gid = uint32(n)
		} else {
			ok := false
			for _, f := range groups {
				if len(f) >= 3 && f[0] == groupPart {
					if g, err := strconv.ParseUint(f[2], 10, 32); err == nil {
						gid, ok = uint32(g), true
						break
					}
				}
			}
			if !ok {
				return execUser{}, fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
			}
		}
	}
	supp := []uint32{}
	if name != "" {
		for _, f := range groups {
			if len(f) < 4 || f[3] == "" {
				continue
			}
			g, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil || uint32(g) == gid {
				continue
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == name {
					supp = append(supp, uint32(g))
					break
				}
			}
		}
	}
	if home == "" {
		home = "/"
	}
	if os.Geteuid() != 0 && int(uid) == os.Geteuid() && int(gid) == os.Getegid() {
		// Already that user: switching would need CAP_SETGID for setgroups.
		return execUser{home: home}, nil
	}
	return execUser{cred: &syscall.Credential{Uid: uid, Gid: gid, Groups: supp}, home: home}, nil
}

// readColonFile reads a file of colon-separated fields (/etc/passwd,
// /etc/group), skipping blank lines and comments.
func readColonFile(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out, s.Err()
}
