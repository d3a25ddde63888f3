package shared

import (
	"github.com/metership/metership/conf"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/ship"
)

// ValidateConfig checks the replicas' settings of a metering section,
// metering.state_url and metering.merge_grace (engine.Validate runs it).
func ValidateConfig(m conf.Metering) conf.Errors {
	var v conf.Errors
	if m.Mode != metering.ModeMeterUsage && m.Mode != metering.ModeBatchMeterUsage {
		return nil
	}
	if m.StateURL != "" {
		if m.Mode != metering.ModeBatchMeterUsage {
			v.Add("metering.state_url", "only used with metering.mode batch_meter_usage (meter_usage reports per pod)")
		} else if err := ship.CheckURL(m.StateURL); err != nil {
			v.Add("metering.state_url", "%v", err)
		}
	}
	if m.MergeGrace < 0 || m.MergeGrace.D() > m.Window.D()/2 {
		v.Add("metering.merge_grace", "%s must be between 0 and half of metering.window (%s)", m.MergeGrace, m.Window)
	}
	return v
}
