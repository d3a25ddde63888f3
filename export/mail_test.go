package export_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
	"github.com/metership/metership/export"
)

// smtpSink is a real SMTP server (emersion/go-smtp) keeping what it gets.
type smtpSink struct {
	mu   sync.Mutex
	msgs []string // "from|to|data"
}

type smtpSession struct {
	sink     *smtpSink
	from, to string
}

func (s *smtpSession) Reset()        {}
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.sink.mu.Lock()
	defer s.sink.mu.Unlock()
	s.sink.msgs = append(s.sink.msgs, s.from+"|"+s.to+"|"+string(b))
	return nil
}

func startSMTP(t *testing.T) (*smtpSink, string, int) {
	t.Helper()
	sink := &smtpSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{sink: sink}, nil
	}))
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	return sink, host, p
}

// TestMailResult: with jobs.smtp set, a run's result reaches the job's
// email through a real SMTP server.
func TestMailResult(t *testing.T) {
	sink, host, port := startSMTP(t)
	cfg := fileConfig(t)
	cfg.Jobs.SMTP = conf.JobsSMTP{Host: host, Port: port, From: "metership@example.com"}
	if err := engine.Validate(cfg, nil, false); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, cfg, t0, exportOptions())
	e.create(map[string]any{"jobName": "Mailed", "s3Url": "file://" + t.TempDir(), "format": "csv",
		"aggregationBucket": "day", "range": "ago(1d)", "email": "finance@example.com"})
	if n := e.tick(); n != 1 {
		t.Fatalf("ran %d", n)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.msgs) != 1 {
		t.Fatalf("%d messages", len(sink.msgs))
	}
	m := sink.msgs[0]
	for _, want := range []string{"metership@example.com|finance@example.com|", "Subject: metership export Mailed: success", `export job "Mailed": success, key Mailed/`} {
		if !strings.Contains(m, want) {
			t.Fatalf("message lacks %q:\n%s", want, m)
		}
	}
}

// TestMailRefusesCleartextPassword: a username with a server that offers
// no STARTTLS is an error, not a password sent in the clear.
func TestMailRefusesCleartextPassword(t *testing.T) {
	sink, host, port := startSMTP(t)
	m := export.NewSMTPMailer(conf.JobsSMTP{Host: host, Port: port, From: "a@example.com", Username: "u", Password: "p"})
	err := m.Send(context.Background(), "b@example.com", "s", "b")
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("err = %v", err)
	}
	if len(sink.msgs) != 0 {
		t.Fatal("sent anyway")
	}
}
