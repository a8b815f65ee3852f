#!/bin/sh
# dovecote, as one file: this script, then a gzipped tar of the broker built with its own Python.
# The first start of a build unpacks it, once, into a cache directory; every start then runs the
# broker in this process's place (exec), so the process the operator started is the broker: its
# signals, its exit code, and nothing left behind by kill -9. Later starts write nothing to disk.
# DOVECOTE_UNPACK_DIR chooses where builds are unpacked (by default systemd's $CACHE_DIRECTORY,
# $XDG_CACHE_HOME/dovecote, ~/.cache/dovecote, or /tmp/dovecote-UID without a home); a build no
# longer used may be deleted from there.
build=@BUILD@
payload_offset=@OFFSET@
PATH=${PATH:-/usr/bin:/bin}
if [ -n "${DOVECOTE_UNPACK_DIR:-}" ]; then
    base=$DOVECOTE_UNPACK_DIR
elif [ -n "${CACHE_DIRECTORY:-}" ]; then
    base=$CACHE_DIRECTORY
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    base=$XDG_CACHE_HOME/dovecote
elif [ -n "${HOME:-}" ] && [ -d "$HOME" ] && [ -w "$HOME" ]; then
    base=$HOME/.cache/dovecote
else
    base=/tmp/dovecote-$(id -u)
fi
here=$base/$build
if [ ! -x "$here/dovecote" ]; then
    umask 077
    mkdir -p "$base" || { echo "dovecote: cannot create $base to unpack into (set DOVECOTE_UNPACK_DIR)" >&2; exit 4; }
    if [ -L "$base" ] || [ ! -O "$base" ]; then
        echo "dovecote: $base is not a directory of this user's own; set DOVECOTE_UNPACK_DIR" >&2
        exit 4
    fi
    unpacked=$(mktemp -d "$base/.$build.XXXXXX") || exit 4
    if ! tail -c "+$payload_offset" "$0" | tar -xzf - -C "$unpacked"; then
        rm -rf "$unpacked"
        echo "dovecote: unpacking into $base failed (is the disk full?)" >&2
        exit 4
    fi
    # The build's name appears only once it is whole (a link is made or refused at once); when
    # another start made it first, that copy serves and this one goes.
    ln -s "${unpacked##*/}" "$here" 2>/dev/null || rm -rf "$unpacked"
fi
exec "$here/dovecote" "$@"
