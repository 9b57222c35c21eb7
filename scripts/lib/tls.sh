# Shared by the scripts: development and test certificates (EC P-256), made with the openssl command.
#   make_certificates DIR
# writes into DIR: ca.pem/ca.key (a private CA), server.pem/server.key (DNS:localhost, IP:127.0.0.1),
# client.pem/client.key (CN=service:dev-client, signed by the CA), and rogue-ca.pem + rogue-client.pem/.key
# (a client certificate from another CA, which the server must refuse). Idempotent: keeps what exists.
make_certificates() {
    local dir=$1
    mkdir -p "$dir"
    [ -f "$dir/server.pem" ] && [ -f "$dir/client.pem" ] && [ -f "$dir/rogue-client.pem" ] && return 0
    (
        cd "$dir"
        umask 077
        gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
        make_ca() {
            gen_key "$1.key"
            openssl req -x509 -new -key "$1.key" -days 3650 -subj "/CN=$2" -out "$1.pem" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        }
        sign() { # name subject ca extensions
            gen_key "$1.key"
            openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
            printf '%s\n' "$4" > "$1.ext"
            openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 825 \
                -extfile "$1.ext" -out "$1.pem" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        make_ca ca "chatd development CA"
        make_ca rogue-ca "some other CA"
        sign server localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
        sign client "service:dev-client" ca "extendedKeyUsage=clientAuth"
        sign rogue-client "service:rogue" rogue-ca "extendedKeyUsage=clientAuth"
        chmod 644 ./*.pem
    )
}
