package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

// FuzzRoutes posts arbitrary bodies to every POST route of a live server:
// each answer is a success or a refusal in the API's error shape, never a
// panic, a dropped connection or a 5xx other than the model's 424.
func FuzzRoutes(f *testing.F) {
	routes := []string{"/embed", "/predict", "/rerank", "/tokenize", "/fill-mask", "/ner", "/nsp"}
	s := start(f, load(f, tiny+"bert-classifier", true), pipeline.BatchConfig{}, api.Options{})
	for i, body := range []string{
		`{"inputs":"a text"}`, `{"inputs":["one","two"],"normalize":false,"truncate":true}`,
		`{"inputs":[["a","b"]]}`, `{"query":"q","texts":["a","b"],"return_text":true,"raw_scores":true}`,
		`{"inputs":"x","aggregation_strategy":"simple"}`, `{"inputs":""}`, `{"inputs":[]}`, `{`, `null`, "\xff",
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		resp, err := http.Post(s.url+routes[int(route)%len(routes)], "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%q: reading the answer: %v", body, err)
		}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusFailedDependency {
			t.Fatalf("%q: status %d: %s", body, resp.StatusCode, raw)
		}
		if !json.Valid(raw) {
			t.Fatalf("%q: status %d, answer is not JSON: %s", body, resp.StatusCode, raw)
		}
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error string `json:"error"`
				Type  string `json:"error_type"`
			}
			if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" || e.Type == "" {
				t.Fatalf("%q: status %d without an error and its type: %s", body, resp.StatusCode, raw)
			}
		}
	})
}
