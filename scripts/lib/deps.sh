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
        postgresql postgresql-contrib openssl prometheus make gcc pkg-config pgbouncer haproxy \
        libnats-dev nats-server
}

# The Python packages the tests need, from PyPI, in a virtualenv of the checkout's own (made once, and again when
# scripts/lib/python-test-requirements.txt changes). Sets CHAT_TEST_PYTHON.
ensure_python_test_env() {
    local venv=$PWD/.build-python
    local requirements=$PWD/scripts/lib/python-test-requirements.txt
    if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            ensure_packages python3-venv
            /usr/bin/python3 -m venv "$venv"
        fi
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
        cp "$requirements" "$venv/requirements.txt"
    fi
    export CHAT_TEST_PYTHON=$venv/bin/python
}
