package emulator

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigYAML(t *testing.T) {
	path := writeFile(t, "emulator.yaml", `
region: eu-central-1
products:
  prod-a:
    dimensions: [hosts, gigabytes]
  prod-saas:
    licenses: ["arn:aws:license-manager::1:license:l-1"]
entitled_customers: [cust-a]
not_entitled_instances: [pod-9]
customers:
  tok-1: {customer_identifier: cust-a, product_code: prod-saas}
meter_usage_window: 2h
batch_window: 12h
future_skew: 1m
`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Region: "eu-central-1",
		Products: map[string]Product{
			"prod-a":    {Dimensions: []string{"hosts", "gigabytes"}},
			"prod-saas": {Licenses: []string{"arn:aws:license-manager::1:license:l-1"}},
		},
		EntitledCustomers:    []string{"cust-a"},
		NotEntitledInstances: []string{"pod-9"},
		Customers:            map[string]Customer{"tok-1": {CustomerIdentifier: "cust-a", ProductCode: "prod-saas"}},
		MeterUsageWindow:     2 * time.Hour,
		BatchWindow:          12 * time.Hour,
		FutureSkew:           time.Minute,
		MonthEndGrace:        DefaultMonthEndGrace,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestLoadConfigJSONAndDefaults(t *testing.T) {
	path := writeFile(t, "emulator.json", `{"products": {"p": {"dimensions": ["d"]}}}`)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != DefaultRegion || cfg.MeterUsageWindow != 6*time.Hour || cfg.BatchWindow != 6*time.Hour ||
		cfg.FutureSkew != 5*time.Minute || len(cfg.Products) != 1 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name, content, wantKey string
	}{
		{"unknown key", "regoin: us-east-1\n", "regoin"},
		{"bad duration", "batch_window: tomorrow\n", "line 1"},
		{"negative window", "meter_usage_window: -1h\n", "meter_usage_window"},
		{"empty dimension", "products:\n  p:\n    dimensions: [ok, '']\n", "products.p.dimensions[1]"},
		{"duplicate dimension", "products:\n  p:\n    dimensions: [a, a]\n", "products.p.dimensions[1]"},
		{"bad product code", "products:\n  'bad code!':\n    dimensions: [a]\n", "products"},
		{"bad region", "region: US East\n", "region"},
		{"customer without id", "customers:\n  tok: {product_code: p}\n", "customers.tok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeFile(t, "c.yaml", tt.content))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Fatalf("error %q does not name %s", err, tt.wantKey)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	cfg := Config{
		Region:      "Nowhere Land",
		Products:    map[string]Product{"p": {Dimensions: []string{"", "x", "x"}}},
		BatchWindow: -time.Hour,
	}
	err := cfg.Validate()
	for _, key := range []string{"region", "products.p.dimensions[0]", "products.p.dimensions[2]", "batch_window"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

func TestDefaultConfigServesTheDemo(t *testing.T) {
	cfg := DefaultConfig()
	p, ok := cfg.Products[DemoProductCode]
	if !ok || !reflect.DeepEqual(p.Dimensions, []string{"api_calls", "storage_gb", "requests"}) {
		t.Fatalf("demo product %+v", cfg.Products)
	}
	if cfg.Region != "us-east-1" || len(cfg.EntitledCustomers) != 0 {
		t.Fatalf("%+v", cfg)
	}
}

func TestProductWithoutDimensionsAcceptsAny(t *testing.T) {
	h := newHarness(t, nil)
	c := h.client("AKIDPOD1")
	in := &mm.MeterUsageInput{ProductCode: aws.String("any-dimension"), UsageDimension: aws.String("whatever_you_like"), Timestamp: aws.Time(testNow)}
	if _, err := c.MeterUsage(ctx(t), in); err != nil {
		t.Fatal(err)
	}
}

func TestNewCopiesConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Now = func() time.Time { return testNow }
	em := New(cfg)
	cfg.Products[DemoProductCode].Dimensions[0] = "renamed"
	delete(cfg.Products, DemoProductCode)
	if got := em.cfg.Products[DemoProductCode].Dimensions[0]; got != "api_calls" {
		t.Fatalf("emulator sees the caller's later edit: %q", got)
	}
}
