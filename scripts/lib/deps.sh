# Shared by the scripts: install missing Debian packages (once per run, with one apt-get update).
_apt_updated=0
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    if [ $_apt_updated = 0 ]; then
        $sudo apt-get update -qq >&2
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Every Debian package the project needs to build, test and run.
ensure_all_packages() {
    ensure_packages libpq-dev libssl-dev libprotobuf-c-dev protobuf-c-compiler python3-protobuf \
        postgresql postgresql-contrib openssl prometheus
}
