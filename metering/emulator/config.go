package emulator

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// ErrInvalidConfig is returned, wrapped with the offending YAML key, when a
// Config cannot describe a working emulator.
var ErrInvalidConfig = errors.New("emulator: invalid config")

// Defaults applied by New and LoadConfig to zero-valued Config fields.
const (
	DefaultRegion           = "us-east-1"
	DefaultMeterUsageWindow = 6 * time.Hour
	DefaultBatchWindow      = 6 * time.Hour
	DefaultFutureSkew       = 5 * time.Minute
	DefaultMonthEndGrace    = 6 * time.Hour

	// DemoProductCode is the product DefaultConfig configures, so the README
	// demo works without a config file.
	DemoProductCode = "metership-demo"
)

// Config describes the AWS Marketplace world the emulator pretends to be:
// its Region, the products a seller has listed and which customers are
// subscribed to them. Zero durations mean the defaults above.
type Config struct {
	// Region is the only Region the endpoint accepts in the SigV4 credential
	// scope; another one gets InvalidEndpointRegionException.
	Region string `yaml:"region" json:"region"`

	// Products maps a product code to its listing. A product with no
	// Dimensions accepts any dimension name (handy for demos); list the
	// dimensions to have unknown ones rejected with
	// InvalidUsageDimensionException as AWS does.
	Products map[string]Product `yaml:"products" json:"products"`

	// EntitledCustomers lists the CustomerIdentifier and CustomerAWSAccountId
	// values subscribed to every product. Empty means every customer is
	// subscribed; otherwise BatchMeterUsage records for anyone else get the
	// CustomerNotSubscribed status.
	EntitledCustomers []string `yaml:"entitled_customers" json:"entitled_customers"`

	// NotEntitledInstances lists caller identities (access key ids or
	// X-Emulator-Instance values) whose MeterUsage and RegisterUsage calls
	// fail with CustomerNotEntitledException, as for a buyer whose
	// subscription lapsed.
	NotEntitledInstances []string `yaml:"not_entitled_instances" json:"not_entitled_instances"`

	// Customers maps a ResolveCustomer registration token to the customer it
	// resolves to; unknown tokens get InvalidTokenException.
	Customers map[string]Customer `yaml:"customers" json:"customers"`

	// MeterUsageWindow is how far in the past a MeterUsage Timestamp may be
	// (AWS: 6 hours).
	MeterUsageWindow time.Duration `yaml:"meter_usage_window" json:"meter_usage_window"`

	// BatchWindow is how far in the past a BatchMeterUsage record Timestamp
	// may be (AWS: records are not accepted 6 hours or more after the
	// event, as for MeterUsage).
	BatchWindow time.Duration `yaml:"batch_window" json:"batch_window"`

	// FutureSkew is how far in the future a Timestamp may be, for clock skew
	// between caller and service. Negative means no skew at all.
	FutureSkew time.Duration `yaml:"future_skew" json:"future_skew"`

	// MonthEndGrace is the BatchMeterUsage billing-cycle rule: records for a
	// previous month are rejected once this long has passed since 00:00 UTC
	// on the first day of the current month, whatever BatchWindow says.
	// Negative disables the rule.
	MonthEndGrace time.Duration `yaml:"month_end_grace" json:"month_end_grace"`

	// Now is the emulator's clock; tests move it. Nil means time.Now.
	Now func() time.Time `yaml:"-" json:"-"`

	// Logger receives one debug line per AWS request. Nil means no logging.
	Logger *zap.Logger `yaml:"-" json:"-"`
}

// Product is one AWS Marketplace listing.
type Product struct {
	// Dimensions are the pricing dimension names; empty accepts any name.
	Dimensions []string `yaml:"dimensions" json:"dimensions"`

	// Licenses are the license ARNs granted for this product. A
	// BatchMeterUsage request without ProductCode finds its product through
	// the records' LicenseArn; with ProductCode, a LicenseArn must be one of
	// these when the list is not empty (else InvalidLicenseException).
	Licenses []string `yaml:"licenses" json:"licenses"`
}

// Customer is what ResolveCustomer returns for a registration token.
type Customer struct {
	CustomerIdentifier   string `yaml:"customer_identifier" json:"customer_identifier"`
	CustomerAWSAccountID string `yaml:"customer_aws_account_id" json:"customer_aws_account_id"`
	ProductCode          string `yaml:"product_code" json:"product_code"`
	LicenseArn           string `yaml:"license_arn" json:"license_arn"`
}

// DefaultConfig returns the configuration `metership emulate-metering` uses
// without a file: Region us-east-1, the product metership-demo with the
// dimensions api_calls, storage_gb and requests, every customer entitled and
// AWS's windows.
func DefaultConfig() Config {
	return Config{
		Region: DefaultRegion,
		Products: map[string]Product{
			DemoProductCode: {Dimensions: []string{"api_calls", "storage_gb", "requests"}},
		},
		MeterUsageWindow: DefaultMeterUsageWindow,
		BatchWindow:      DefaultBatchWindow,
		FutureSkew:       DefaultFutureSkew,
		MonthEndGrace:    DefaultMonthEndGrace,
	}
}

// LoadConfig reads a YAML (or JSON, a subset of YAML) file into a Config,
// rejecting unknown keys, fills zero fields with the defaults and validates
// it. Products come from the file only; the demo product is not added.
// Durations are Go duration strings such as "6h".
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("emulator: read config: %w", err)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, path, err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

var (
	productCodePattern = regexp.MustCompile(`^[-a-zA-Z0-9/=:_.@]{1,255}$`)
	regionPattern      = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
)

// Validate reports every problem in c, each naming its YAML key and
// wrapping ErrInvalidConfig; nil when the emulator can serve with c.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if c.Region != "" && !regionPattern.MatchString(c.Region) {
		bad("region", "%q is not a Region name", c.Region)
	}
	for _, code := range slices.Sorted(maps.Keys(c.Products)) {
		if !productCodePattern.MatchString(code) {
			bad("products", "product code %q must match %s", code, productCodePattern)
		}
		seen := map[string]bool{}
		for i, d := range c.Products[code].Dimensions {
			key := fmt.Sprintf("products.%s.dimensions[%d]", code, i)
			switch {
			case d == "" || len(d) > 255:
				bad(key, "dimension names are 1 to 255 characters")
			case seen[d]:
				bad(key, "duplicate dimension %q", d)
			}
			seen[d] = true
		}
		for i, l := range c.Products[code].Licenses {
			if l == "" {
				bad(fmt.Sprintf("products.%s.licenses[%d]", code, i), "empty license ARN")
			}
		}
	}
	for _, token := range slices.Sorted(maps.Keys(c.Customers)) {
		cust := c.Customers[token]
		if token == "" {
			bad("customers", "empty registration token")
		}
		if cust.CustomerIdentifier == "" && cust.CustomerAWSAccountID == "" {
			bad("customers."+token, "needs customer_identifier or customer_aws_account_id")
		}
	}
	if c.MeterUsageWindow < 0 {
		bad("meter_usage_window", "must not be negative, got %s", c.MeterUsageWindow)
	}
	if c.BatchWindow < 0 {
		bad("batch_window", "must not be negative, got %s", c.BatchWindow)
	}
	return errors.Join(errs...)
}

// clone returns a copy of c sharing no maps or slices with it, so the
// caller may keep editing its Config after New.
func (c Config) clone() Config {
	products := make(map[string]Product, len(c.Products))
	for code, p := range c.Products {
		products[code] = Product{Dimensions: slices.Clone(p.Dimensions), Licenses: slices.Clone(p.Licenses)}
	}
	c.Products = products
	c.Customers = maps.Clone(c.Customers)
	c.EntitledCustomers = slices.Clone(c.EntitledCustomers)
	c.NotEntitledInstances = slices.Clone(c.NotEntitledInstances)
	return c
}

// withDefaults returns c with zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.MeterUsageWindow == 0 {
		c.MeterUsageWindow = DefaultMeterUsageWindow
	}
	if c.BatchWindow == 0 {
		c.BatchWindow = DefaultBatchWindow
	}
	if c.FutureSkew == 0 {
		c.FutureSkew = DefaultFutureSkew
	}
	if c.MonthEndGrace == 0 {
		c.MonthEndGrace = DefaultMonthEndGrace
	}
	return c
}
