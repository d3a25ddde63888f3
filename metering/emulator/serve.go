package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// shutdownTimeout bounds how long Serve waits for in-flight requests after
// its context ends.
const shutdownTimeout = 5 * time.Second

// Serve validates cfg, listens on addr (e.g. "127.0.0.1:8787") and serves
// an emulator until ctx ends, then shuts down gracefully and returns nil.
// It backs `metership emulate-metering --listen ADDR`.
func Serve(ctx context.Context, addr string, cfg Config, log *zap.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("emulator: listen %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, cfg, log)
}

// ServeListener is Serve on a listener the caller opened, e.g. on port 0
// to learn the address first. It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, cfg Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		_ = ln.Close()
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	e := New(cfg)
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	log.Info("metering emulator listening",
		zap.String("addr", ln.Addr().String()),
		zap.String("endpoint", "http://"+ln.Addr().String()),
		zap.String("region", e.cfg.Region),
		zap.Int("products", len(e.cfg.Products)))

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("emulator: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("emulator: serve: %w", err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("emulator: shutdown: %w", shutdownErr)
	}
	log.Info("metering emulator stopped")
	return nil
}
