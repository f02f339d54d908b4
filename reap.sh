# reap.sh: kill what a command left in a container, and verify it.
#
# Run as: /bin/sh -c "$(cat reap.sh)" dockerpool-reap MODE TOKEN
#
# It kills every process of the container except PID 1, the main process
# under an init, and itself (MODE "all"), or only those whose environment
# holds TOKEN (MODE "token"); then it lists the processes again, until none
# is left (exit 0) or it gives up (exit 3). It forks nothing in "all" mode
# but sleep, so what it finds is not its own. Zombies are dead already and
# not counted. Embedded in the library (runner_docker.go).
mode=$1 token=$2 self=$$ main=
read -r comm < /proc/1/comm
case $comm in
docker-init|tini|catatonit|dumb-init|init|podman-init)
  bestt=
  for d in /proc/[0-9]*; do
    read -r st < "$d/stat" 2>/dev/null || continue
    set -- ${st##*) }
    [ "$2" = 1 ] || continue
    if [ -z "$bestt" ] || [ "${20}" -lt "$bestt" ]; then main=${d#/proc/} bestt=${20}; fi
  done;;
esac
i=0
while :; do
  left=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    { [ "$p" = 1 ] || [ "$p" = "$self" ] || [ "$p" = "$main" ]; } && continue
    read -r st < "$d/stat" 2>/dev/null || continue
    set -- ${st##*) }
    { [ "$1" = Z ] || [ "$2" = "$self" ]; } && continue
    if [ "$mode" = token ]; then
      grep -q "$token" "$d/environ" 2>/dev/null || continue
    fi
    kill -9 "$p" 2>/dev/null
    left=$((left+1))
  done
  [ "$left" = 0 ] && exit 0
  i=$((i+1))
  if [ "$i" -ge 60 ]; then echo "$left process(es) survive" >&2; exit 3; fi
  sleep 0.02 2>/dev/null || :
done
