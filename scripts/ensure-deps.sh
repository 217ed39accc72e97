#!/usr/bin/env bash
# ensure-deps.sh installs what pgmoat's tests need, and only what is
# missing: the PostgreSQL server with contrib (dblink), psql, pgbench,
# pg_dump and pg_restore, promtool (to validate examples/alerts.yml), node
# and npm, the node-postgres test client's packages, and Chromium. It is
# idempotent and says what it did; on a machine that has everything it only
# checks. Installing needs root (or sudo); checking does not.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'ensure-deps: %s\n' "$*"; }
die() { printf 'ensure-deps: error: %s\n' "$*" >&2; exit 1; }

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
fi

apt_updated=
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "missing $*, and there is no apt-get to install it with; install it by hand"
	if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
		die "missing $*; run this script as root (or install sudo)"
	fi
	if [ -z "$apt_updated" ]; then
		log "apt-get update"
		$SUDO apt-get update -qq
		apt_updated=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A bin directory with a server in it, highest version first.
server_bindir() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
		if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
	done
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir)
		if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
	fi
	return 1
}

# PostgreSQL server. The tests start their own throwaway clusters, so keep
# the Debian package from creating (and starting) a "main" cluster.
if ! bindir=$(server_bindir); then
	if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
		apt_install postgresql-common
	fi
	if grep -q '^#\?\s*create_main_cluster' /etc/postgresql-common/createcluster.conf; then
		$SUDO sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
	else
		echo 'create_main_cluster = false' | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
	fi
	apt_install postgresql postgresql-contrib
	bindir=$(server_bindir) || die "PostgreSQL installed but no server binaries found under /usr/lib/postgresql/*/bin"
else
	log "PostgreSQL server present: $bindir"
fi
version=$(basename "$(dirname "$bindir")")

# contrib: dblink, which the evasion corpus's schema uses. Since 10 it
# ships in postgresql-N itself; older layouts need postgresql-contrib.
sharedir=$("$bindir/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$version")
if [ ! -f "$sharedir/extension/dblink.control" ]; then
	apt_install postgresql-contrib
	[ -f "$sharedir/extension/dblink.control" ] || die "dblink extension still missing from $sharedir/extension"
else
	log "contrib present (dblink)"
fi

# psql and pgbench (pgbench is in the server package on Debian).
if [ ! -x "$bindir/psql" ] && ! command -v psql >/dev/null 2>&1; then
	apt_install postgresql-client
else
	log "psql present"
fi
if [ ! -x "$bindir/pgbench" ] && ! command -v pgbench >/dev/null 2>&1; then
	apt_install postgresql-contrib
	{ [ -x "$bindir/pgbench" ] || command -v pgbench >/dev/null 2>&1; } || die "pgbench still missing"
else
	log "pgbench present"
fi

# promtool, prebuilt: Debian's prometheus package ships it (building it
# from source costs minutes and hundreds of modules). The package does not
# start a server here: the tests only run promtool.
if ! command -v promtool >/dev/null 2>&1; then
	apt_install prometheus
	command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
else
	log "promtool present"
fi

# node and npm for the node-postgres client.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
	apt_install "${missing[@]}"
else
	log "node $(node --version) and npm $(npm --version 2>/dev/null) present"
fi

# Headless Chromium for the console's browser test (e2e), Debian's
# package, driven over the DevTools protocol by chromedp.
if ! command -v chromium >/dev/null 2>&1; then
	apt_install chromium fonts-dejavu-core
else
	log "chromium present"
fi

# The node client's packages (node-postgres, and dbmate for the e2e tests),
# pinned by its lock file. Skip when the stamp
# the Go helper writes (sha256 of package-lock.json) says they are in place.
nodedir=internal/clients/node
stamp="$nodedir/node_modules/.pgmoat-lock-sha256"
want=$(sha256sum "$nodedir/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	log "node client packages present"
else
	log "npm ci in $nodedir"
	(cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error)
	printf '%s' "$want" >"$stamp"
fi

log "done"
