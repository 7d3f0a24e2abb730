# Sourced by the remote benches (bench/remote.sh, bench/remote-tar.sh): nginx serving
# "$DIR/www" on 127.0.0.1 behind our proxy (examples/fault_proxy.rs), which adds LAT ms
# a request and keeps its counters in "$DIR/proxy.stats".
# Needs DIR, LAT, PROXY and the array pids (the caller's cleanup kills them); sets P,
# the proxy's port.
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
