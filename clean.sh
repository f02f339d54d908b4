# clean.sh: the Docker exec path's verified reset, after reap.sh killed
# every process. It empties each writable place given as an argument (tmpfs
# and mqueue mounts), removes the System V IPC objects when the image has
# ipcrm, then checks: it prints "left: ..." for what is still there and
# exits 1, or exits 0 when everything is clean. Embedded in the library
# (reset.go); runs as the container's user.
for d in "$@"; do
  [ -d "$d" ] || continue
  for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do
    { [ -e "$f" ] || [ -L "$f" ]; } && rm -rf -- "$f" 2>/dev/null
  done
done
if command -v ipcrm >/dev/null 2>&1; then
  for k in shm:m msg:q sem:s; do
    f=/proc/sysvipc/${k%:*}
    [ -r "$f" ] || continue
    tail -n +2 "$f" | while read -r key id rest; do ipcrm "-${k#*:}" "$id" 2>/dev/null; done
  done
fi
left=0
for d in "$@"; do
  [ -d "$d" ] || continue
  for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do
    if [ -e "$f" ] || [ -L "$f" ]; then echo "left: $f"; left=1; fi
  done
done
for k in shm msg sem; do
  f=/proc/sysvipc/$k
  if [ ! -r "$f" ]; then
    echo "left: System V IPC $k objects cannot be listed: no $f (gVisor has none)"
    left=1
    continue
  fi
  n=$(tail -n +2 "$f" | wc -l)
  if [ "$n" != 0 ]; then echo "left: $n System V IPC $k object(s) (the image has no ipcrm, or they are another user's)"; left=1; fi
done
exit $left
