package export

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	"github.com/metership/metership/conf"
)

// Mailer sends a run's result to a job's email.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// SMTPMailer sends plain-text mail through jobs.smtp.
type SMTPMailer struct {
	cfg conf.JobsSMTP
	// TLSConfig is used for STARTTLS; nil means the system roots and the
	// server name from cfg.Host.
	TLSConfig *tls.Config
}

// NewSMTPMailer returns a mailer for cfg, nil when cfg has no host.
func NewSMTPMailer(cfg conf.JobsSMTP) *SMTPMailer {
	if cfg.Host == "" {
		return nil
	}
	return &SMTPMailer{cfg: cfg}
}

// Send delivers one message. STARTTLS is used when the server offers it
// and required when jobs.smtp.starttls or a username is set, so a password
// never crosses the network in the clear.
func (m *SMTPMailer) Send(ctx context.Context, to, subject, body string) error {
	addr := net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.Port))
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	c, err := smtp.NewClient(conn, m.cfg.Host)
	if err != nil {
		_ = conn.Close() // the handshake failed; its error is the one to report
		return fmt.Errorf("smtp %s: %w", addr, err)
	}
	defer c.Close() //nolint:errcheck // after Quit, or on an error already returned
	if ok, _ := c.Extension("STARTTLS"); ok {
		tc := m.TLSConfig
		if tc == nil {
			tc = &tls.Config{ServerName: m.cfg.Host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(tc); err != nil {
			return fmt.Errorf("smtp %s: starttls: %w", addr, err)
		}
	} else if m.cfg.StartTLS || m.cfg.Username != "" {
		return fmt.Errorf("smtp %s: the server does not offer STARTTLS", addr)
	}
	if m.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.Username, m.cfg.Password, m.cfg.Host)); err != nil {
			return fmt.Errorf("smtp %s: auth: %w", addr, err)
		}
	}
	if err := c.Mail(m.cfg.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", addr, err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("smtp %s: RCPT TO: %w", addr, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", addr, err)
	}
	msg := "From: " + m.cfg.From + "\r\nTo: " + to + "\r\nSubject: " + oneLine(subject) +
		"\r\nDate: " + time.Now().UTC().Format(time.RFC1123Z) +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
		strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("smtp %s: %w", addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: %w", addr, err)
	}
	return c.Quit()
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
