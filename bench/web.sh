# Sourced by the remote benches (bench/remote.sh, bench/remote-tar.sh,
# bench/remote-boot.sh): nginx serving "$DIR/www" on 127.0.0.1 behind our proxy
# (examples/fault_proxy.rs), which adds LAT ms a request and keeps its counters in
# "$DIR/proxy.stats"; or (start_s3) s3s-fs with SigV4 keys over "$DIR/s3root" behind
# another such proxy, counters in "$DIR/s3proxy.stats".
# Needs DIR, LAT, PROXY and the array pids (the caller's cleanup kills them); sets P,
# the nginx proxy's port, or S3P and S3_DIRECT (the proxy's port, s3s-fs's own URL) and
# the AWS_* variables that point object_store at the proxy.
# shellcheck shell=bash

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_web() {
  local nginx_port
  nginx_port=$(free_port)
  cat > "$DIR/nginx.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root;" )
daemon off; worker_processes 2; pid $DIR/nginx.pid; error_log $DIR/nginx.err;
events { worker_connections 256; }
http { access_log off; server { listen 127.0.0.1:$nginx_port; root $DIR/www; } }
CONF
  nginx -c "$DIR/nginx.conf" -p "$DIR" & pids+=($!)
  "$PROXY" "$nginx_port" "$LAT" "$DIR/proxy.stats" > "$DIR/proxy.port" & pids+=($!)
  for _ in $(seq 100); do [ -s "$DIR/proxy.port" ] && [ -s "$DIR/proxy.stats" ] && break; sleep 0.1; done
  # shellcheck disable=SC2034 # used by the script that sources this
  P=$(cat "$DIR/proxy.port")
}

# "$DIR/mount.sh", a statechange script for `mindcastle attach` that mounts the disk
# read-only on "$DIR/mnt" when it opens, and unmounts it and stops when it closes.
write_mount_script() {
  cat > "$DIR/mount.sh" <<SCRIPT
#!/bin/sh
case "\$1" in
  open) mount -o ro,noload "\$DEVICE" "$DIR/mnt" ;;
  close) if mountpoint -q "$DIR/mnt"; then umount "$DIR/mnt"; fi; kill -INT "\$PID" ;;
esac
SCRIPT
  chmod +x "$DIR/mount.sh"
}

wait_tcp() { # PORT
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

start_s3() {
  local s3_port
  s3_port=$(free_port)
  mkdir -p "$DIR/s3root/bucket"
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key mindcastle-bench \
    --secret-key mindcastle-bench-secret "$DIR/s3root" > /dev/null 2>&1 & pids+=($!)
  wait_tcp "$s3_port"
  "$PROXY" "$s3_port" "$LAT" "$DIR/s3proxy.stats" > "$DIR/s3proxy.port" & pids+=($!)
  for _ in $(seq 100); do [ -s "$DIR/s3proxy.port" ] && [ -s "$DIR/s3proxy.stats" ] && break; sleep 0.1; done
  # shellcheck disable=SC2034 # used by the script that sources this
  S3P=$(cat "$DIR/s3proxy.port") S3_DIRECT="http://127.0.0.1:$s3_port"
  export AWS_ACCESS_KEY_ID=mindcastle-bench AWS_SECRET_ACCESS_KEY=mindcastle-bench-secret
  export AWS_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$S3P"
}
