# The Docker path's file server (runner_docker_fileserver.go). The first
# line on stdin is the session's token; then one request per line: "op
# count mode umask suffix path" (the path last, so it may hold blanks). Data
# follows a W, and "C" after it commits the write. Everything goes to
# stdout, in order: a G's data or a request's messages, then "token R code".
exec 2>&1
read -r tok || exit 1
while read -r op n m u s p; do
	r=0
	case $op in
	P)
		dd if=/dev/null of=/dev/null bs=65536 count=0 iflag=count_bytes,fullblock status=none || r=42
		;;
	W)
		d=${p%/*}
		[ -n "$d" ] || d=/
		t=$d/.${p##*/}.dockerpool-$s
		if [ ! -d "$d" ]; then
			echo "$d: no such directory" >&2
			r=40
		elif [ -d "$p" ]; then
			echo "$p: is a directory" >&2
			r=41
		else
			umask "$u"
			: >"$t" || r=42
		fi
		if [ $r = 0 ]; then
			dd of="$t" bs=65536 count="$n" iflag=count_bytes,fullblock status=none || r=43
		else
			dd of=/dev/null bs=65536 count="$n" iflag=count_bytes,fullblock status=none
		fi
		if [ $r = 43 ]; then
			# The rest of the data is unread (a full tmpfs): the framing is
			# lost, so stop now rather than read through it for the line.
			rm -f "$t"
			echo "$tok R $r"
			exit 1
		fi
		read -r ok || ok=
		if [ $r = 0 ] && [ "$ok" = C ]; then
			{ [ "$m" = - ] || chmod "$m" "$t"; } && mv -f "$t" "$p" || r=42
		fi
		[ $r = 0 ] || rm -f "$t"
		if [ "$ok" != C ]; then exit 1; fi
		;;
	G)
		if [ ! -e "$p" ]; then
			echo "$p: no such file" >&2
			r=40
		elif [ -d "$p" ]; then
			echo "$p: is a directory" >&2
			r=41
		elif [ ! -f "$p" ]; then
			echo "$p: not a regular file" >&2
			r=44
		elif [ "$n" = - ]; then
			dd if="$p" bs=65536 status=none || r=42
		else
			dd if="$p" bs=65536 count="$n" iflag=count_bytes status=none || r=42
		fi
		;;
	*)
		exit 1
		;;
	esac
	echo "$tok R $r" >&2
	[ $r != 43 ] || exit 1
done
