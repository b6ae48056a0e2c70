package metrics

import (
	"bytes"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Exposition is a parsed GET /metrics answer (tests and tools read it).
type Exposition map[string]*dto.MetricFamily

// Parse parses the text exposition format.
func Parse(text []byte) (Exposition, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse metrics exposition: %w", err)
	}
	return Exposition(fams), nil
}

// Value returns the value of the one series of family whose labels
// include labels (a counter's or gauge's value, a histogram's count); ok
// is false when no series matches, an error when several do.
func (e Exposition) Value(family string, labels map[string]string) (v float64, ok bool, err error) {
	f := e[family]
	if f == nil {
		return 0, false, nil
	}
	found := 0
	for _, s := range f.GetMetric() {
		if !hasLabels(s, labels) {
			continue
		}
		found++
		switch {
		case s.GetCounter() != nil:
			v = s.GetCounter().GetValue()
		case s.GetGauge() != nil:
			v = s.GetGauge().GetValue()
		case s.GetHistogram() != nil:
			v = float64(s.GetHistogram().GetSampleCount())
		case s.GetUntyped() != nil:
			v = s.GetUntyped().GetValue()
		}
	}
	if found > 1 {
		return 0, false, fmt.Errorf("%d series of %s match %v", found, family, labels)
	}
	return v, found == 1, nil
}

func hasLabels(s *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		ok := false
		for _, l := range s.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
