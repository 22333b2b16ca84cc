// kubesight-amtemplate: Alertmanager's own template package (github.com/prometheus/alertmanager/template, with
// its default.tmpl and email.tmpl) run for kubesight, which is written in Python.
//
// One JSON request per line on stdin, one JSON answer per line on stdout:
//
//	{"files": [globs], "check": [text, ...]}
//	    -> {"errors": ["" or the parse error, ...]}
//	{"files": [globs], "external_url": u, "note": notification, "text": {k: tmpl}, "html": {k: tmpl}}
//	    -> {"out": {k: rendered}, "errors": {k: error}}
//
// A notification is kubesight's record (receiver, status, groupLabels, alerts with labels, annotations,
// startsAt, endsAt, generatorURL); the template data is made from it by Alertmanager's Template.Data, so
// .Alerts.Firing, .CommonLabels, .GroupLabels.SortedPairs and the rest are Alertmanager's.  The template
// files of a set of globs are parsed once and again when one of the matched files changes.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

type request struct {
	Files       []string          `json:"files"`
	Check       []string          `json:"check"`
	ExternalURL string            `json:"external_url"`
	Note        *note             `json:"note"`
	Text        map[string]string `json:"text"`
	HTML        map[string]string `json:"html"`
}

type note struct {
	Receiver    string            `json:"receiver"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []struct {
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     string            `json:"startsAt"`
		EndsAt       *string           `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
	} `json:"alerts"`
}

type set struct {
	stamp string
	tmpl  *template.Template
	err   error
}

var sets = map[string]*set{}

// stamp names the files a set of globs matches as they are now (path, size, modification time).
func stamp(globs []string) string {
	var b strings.Builder
	for _, g := range globs {
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil {
				fmt.Fprintf(&b, "%s|%d|%d\n", m, st.Size(), st.ModTime().UnixNano())
			}
		}
	}
	return b.String()
}

func templates(globs []string) (*template.Template, error) {
	key := strings.Join(globs, "\x00")
	now := stamp(globs)
	s := sets[key]
	if s == nil || s.stamp != now {
		t, err := template.FromGlobs(globs)
		s = &set{now, t, err}
		sets[key] = s
	}
	return s.tmpl, s.err
}

func labelSet(m map[string]string) model.LabelSet {
	out := model.LabelSet{}
	for k, v := range m {
		out[model.LabelName(k)] = model.LabelValue(v)
	}
	return out
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func data(t *template.Template, n *note) *template.Data {
	alerts := make([]*alert.Alert, 0, len(n.Alerts))
	for _, a := range n.Alerts {
		m := model.Alert{Labels: labelSet(a.Labels), Annotations: labelSet(a.Annotations),
			StartsAt: parseTime(a.StartsAt), GeneratorURL: a.GeneratorURL}
		if a.EndsAt != nil {
			m.EndsAt = parseTime(*a.EndsAt)
		}
		alerts = append(alerts, alert.New(m, time.Now(), false))
	}
	return t.Data(n.Receiver, labelSet(n.GroupLabels), model.LabelSet{}, "", alerts...)
}

func answer(req request) any {
	t, err := templates(req.Files)
	if req.Check != nil {
		errs := make([]string, len(req.Check))
		for i, text := range req.Check {
			if err != nil {
				errs[i] = err.Error()
				continue
			}
			// executed on an empty notification: a parse error, or a template it names that no file defines, is the
			// text's fault; any other error (index out of range ...) depends on the notification
			if _, e := t.ExecuteTextString(text, &template.Data{}); e != nil &&
				(!strings.Contains(e.Error(), "executing \"") || strings.Contains(e.Error(), "not defined")) {
				errs[i] = e.Error()
			}
		}
		return map[string]any{"errors": errs}
	}
	out, errs := map[string]string{}, map[string]string{}
	if err != nil {
		for k := range req.Text {
			errs[k] = err.Error()
		}
		for k := range req.HTML {
			errs[k] = err.Error()
		}
		return map[string]any{"out": out, "errors": errs}
	}
	if u, e := url.Parse(req.ExternalURL); e == nil {
		t.ExternalURL = u
	}
	d := data(t, req.Note)
	for k, text := range req.Text {
		if s, e := t.ExecuteTextString(text, d); e != nil {
			errs[k] = e.Error()
		} else {
			out[k] = s
		}
	}
	for k, text := range req.HTML {
		if s, e := t.ExecuteHTMLString(text, d); e != nil {
			errs[k] = e.Error()
		} else {
			out[k] = s
		}
	}
	return map[string]any{"out": out, "errors": errs}
}

func main() {
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			var req request
			if e := json.Unmarshal(line, &req); e != nil {
				_ = out.Encode(map[string]any{"fatal": e.Error()})
			} else {
				_ = out.Encode(answer(req))
			}
		}
		if err != nil {
			return
		}
	}
}
