"""Start a static HTTP server on a port, detached, as a process manager's restart would, and record its pid.

Usage: restart_http_server.py PORT DIRECTORY PIDFILE
"""
import subprocess
import sys

port, directory, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]
server = subprocess.Popen(
    [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", directory],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
)
with open(pidfile, "w") as f:
    f.write(str(server.pid))
print(f"started pid {server.pid} on port {port}")
