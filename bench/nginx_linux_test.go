package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/deathsig"
)

// startNginx runs Debian's nginx as a reference reverse proxy in front of
// upstream, configured like paddock's proxy (HTTP/1.1 keep-alive pool to the
// sandbox, responses streamed, not buffered to disk, 64 KiB buffers), and
// returns its base URL on 127.0.0.1. It answers "" when nginx is not
// installed: the reference is optional (apt install nginx-light), the
// benchmark's own figures are not. nginx is stopped and its files removed
// by cleanups.
func startNginx(b *testing.B, upstream netip.AddrPort) string {
	b.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		b.Logf("nginx is not installed (apt install nginx-light): no reference proxy in this run")
		return ""
	}
	dir, err := os.MkdirTemp("", "pb-nginx-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	port, err := freePort()
	if err != nil {
		b.Fatal(err)
	}
	// worker_processes auto: one per core, as paddock's Go runtime uses
	// every core. Temp paths point into dir so nothing is written elsewhere.
	conf := fmt.Sprintf(`daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream sandbox { server %[2]s; keepalive 64; }
  server {
    listen 127.0.0.1:%[3]d;
    location / {
      proxy_pass http://sandbox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      proxy_busy_buffers_size 128k;
    }
  }
}
`, dir, upstream, port)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	child, err := deathsig.Start(cmd)
	if err != nil {
		b.Fatalf("start nginx: %v", err)
	}
	b.Cleanup(func() {
		// SIGTERM is nginx's fast shutdown; its workers go with the master.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-child.Done()
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil { // bounded by ctx: nginx binds within milliseconds
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
	b.Fatalf("nginx never listened on %s: %s", addr, log)
	return ""
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before nginx binds; startNginx then fails with nginx's log.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
