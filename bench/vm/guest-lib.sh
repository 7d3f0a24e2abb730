#!/bin/sh
# Sourced by the bench guests (copied into the initramfs's /usr/local/bin): `fail`, a
# statechange script that records the device, and `attach_plain`.
cd /work || exit 1
mkdir -p /var/lock /run
fail() { echo "MCVM-RESULT fail $*"; cat /work/*.log 2>/dev/null | tail -40; exit 1; }
cat > /work/plain-state.sh <<'EOS'
#!/bin/sh
case "$1" in
create|open) echo "$DEVICE" > /work/device; touch /work/ready ;;
close) kill -INT "$PID" ;;
esac
EOS
chmod +x /work/plain-state.sh
# attach_plain NAME BINARY ATTACH_ARGS...: attaches NAME.swap with BINARY and waits for
# its device; sets pid and dev.
attach_plain() {
    name=$1 bin=$2
    shift 2
    rm -f /work/ready
    "$bin" attach "$@" "$name.swap" /work/plain-state.sh > "$name.log" 2>&1 &
    pid=$!
    n=0
    while [ ! -e /work/ready ]; do
        n=$((n + 1)); [ $n -gt 1200 ] && fail "$name not ready"
        kill -0 $pid 2>/dev/null || fail "$name exited"
        sleep 0.1
    done
    # shellcheck disable=SC2034  # read by the scripts that source this one
    dev=$(cat /work/device)
}
