package emulator

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestServeListenerServesUntilCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(runCtx, ln, DefaultConfig(), zap.New(core)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}()

	endpoint := "http://" + ln.Addr().String()
	httpClient := &http.Client{Transport: &http.Transport{}}
	defer httpClient.CloseIdleConnections()

	resp, err := httpClient.Get(endpoint + "/_healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("healthz %d %q", resp.StatusCode, body)
	}

	c := mm.New(mm.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDDEMO", "secret", ""),
		HTTPClient:   httpClient,
	})
	out, err := c.MeterUsage(ctx(t), &mm.MeterUsageInput{
		ProductCode: aws.String(DemoProductCode), UsageDimension: aws.String("api_calls"),
		Timestamp: aws.Time(time.Now()), UsageQuantity: aws.Int32(1),
	})
	if err != nil || aws.ToString(out.MeteringRecordId) == "" {
		t.Fatalf("MeterUsage against the served default config: %v", err)
	}
	if logs.FilterMessage("metering emulator listening").FilterField(zap.String("addr", ln.Addr().String())).Len() != 1 {
		t.Fatalf("no listening log line with the address: %v", logs.All())
	}
}

func TestServeErrors(t *testing.T) {
	bad := DefaultConfig()
	bad.BatchWindow = -time.Second
	if err := Serve(context.Background(), "127.0.0.1:0", bad, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("invalid config: %v", err)
	}
	if err := Serve(context.Background(), "127.0.0.1:notaport", DefaultConfig(), nil); err == nil {
		t.Fatal("bad address: want an error")
	}
}

func TestServeStopsOnCancelledContext(t *testing.T) {
	runCtx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Serve(runCtx, "127.0.0.1:0", DefaultConfig(), zap.NewNop()); err != nil {
		t.Fatalf("Serve with a cancelled context: %v", err)
	}
}
