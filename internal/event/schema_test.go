package event

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// contractSchemas compiles the six payload schemas of the AsyncAPI contract (a copy is kept in
// testdata; the test below checks it against ../shared/spec when that is present), with formats
// asserted (date-time, uri).
func contractSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile("testdata/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	asJSON, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(asJSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("asyncapi.json", inst); err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for name, payload := range map[string]string{"identify": "IdentifyPayload", "track": "TrackPayload", "page": "PagePayload",
		"screen": "ScreenPayload", "group": "GroupPayload", "alias": "AliasPayload"} {
		s, err := c.Compile("asyncapi.json#/components/schemas/" + payload)
		if err != nil {
			t.Fatalf("compile %s: %v", payload, err)
		}
		out[name] = s
	}
	return out
}

// schemaAccepts says whether the contract accepts raw: the message is oneOf the six payloads.
func schemaAccepts(schemas map[string]*jsonschema.Schema, raw string) bool {
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
	if err != nil {
		return false
	}
	valid := 0
	for _, s := range schemas {
		if s.Validate(inst) == nil {
			valid++
		}
	}
	return valid == 1
}

// TestValidatorAgreesWithTheContract runs the decoder and a JSON Schema validator compiled from
// the contract over the same events. They must agree, except where the sink is deliberately
// different; each such case says why, and must really differ.
func TestValidatorAgreesWithTheContract(t *testing.T) {
	t.Parallel()
	schemas := contractSchemas(t)
	tests := []struct {
		name string
		raw  string
		// why is empty when both must agree, else the reason the sink differs on purpose.
		why string
	}{
		// Agreement: valid.
		{name: "identify", raw: `{"type":"identify","userId":"u","traits":{"email":"a@b.c"}}`},
		{name: "track", raw: `{"type":"track","userId":"u","event":"E","properties":{"revenue":1.5}}`},
		{name: "page", raw: `{"type":"page","anonymousId":"a","name":"Home","properties":{"url":"https://example.com/","path":"/"}}`},
		{name: "screen", raw: `{"type":"screen","userId":"u","name":"Feed"}`},
		{name: "group", raw: `{"type":"group","userId":"u","groupId":"g","traits":{"employees":10,"plan":"pro"}}`},
		{name: "alias", raw: `{"type":"alias","userId":"u","previousId":"p"}`},
		{name: "every date-time field", raw: `{"type":"track","userId":"u","event":"E","timestamp":"2024-05-01T10:00:00.123Z","sentAt":"2024-05-01T10:00:01+02:00","receivedAt":"2024-05-01T08:00:02Z"}`},
		{name: "extra fields", raw: `{"type":"track","userId":"u","event":"E","channel":"server","version":2}`},
		{name: "numbers beyond float64", raw: `{"type":"track","userId":"u","event":"E","properties":{"n":1e400}}`},
		// Agreement: invalid.
		{name: "no type", raw: `{"userId":"u"}`},
		{name: "unknown type", raw: `{"type":"click","userId":"u"}`},
		{name: "track without event", raw: `{"type":"track","userId":"u"}`},
		{name: "group without groupId", raw: `{"type":"group","userId":"u"}`},
		{name: "alias without previousId", raw: `{"type":"alias","userId":"u"}`},
		{name: "alias without userId", raw: `{"type":"alias","anonymousId":"a","previousId":"p"}`},
		{name: "userId a number", raw: `{"type":"identify","userId":5}`},
		{name: "context an array", raw: `{"type":"identify","userId":"u","context":[]}`},
		{name: "integrations a string", raw: `{"type":"identify","userId":"u","integrations":"x"}`},
		{name: "traits a string", raw: `{"type":"identify","userId":"u","traits":"x"}`},
		{name: "properties a number", raw: `{"type":"track","userId":"u","event":"E","properties":1}`},
		{name: "timestamp not a date", raw: `{"type":"track","userId":"u","event":"E","timestamp":"2024-13-45T00:00:00Z"}`},
		{name: "timestamp without a zone", raw: `{"type":"track","userId":"u","event":"E","timestamp":"2024-05-01T10:00:00"}`},
		{name: "not an object", raw: `["x"]`},

		// Deliberate differences.
		{name: "neither userId nor anonymousId", raw: `{"type":"identify","traits":{}}`,
			why: "Segment's own rule (error no_user_anon_id): every call needs userId or anonymousId; the schema does not say it"},
		{name: "empty ids", raw: `{"type":"identify","userId":"","anonymousId":""}`,
			why: "an empty id identifies nobody: the same rule"},
		{name: "empty event name", raw: `{"type":"track","userId":"u","event":""}`,
			why: "a track without a name cannot be queried by name: event must be non-empty"},
		{name: "null fields", raw: `{"type":"page","userId":null,"anonymousId":"a","context":null,"name":null}`,
			why: "SDKs send null for unset fields (analytics.js sends userId: null); null is taken as absent"},
		{name: "NUL in a string", raw: `{"type":"track","userId":"u","event":"E","properties":{"k":"a\u0000b"}}`,
			why: "PostgreSQL's text and jsonb cannot store \\u0000"},
		{name: "lone surrogate", raw: `{"type":"track","userId":"u","event":"E","properties":{"k":"\ud800"}}`,
			why: "PostgreSQL's jsonb cannot store a lone UTF-16 surrogate"},
		{name: "number beyond numeric", raw: `{"type":"track","userId":"u","event":"E","properties":{"n":1e131072}}`,
			why: "PostgreSQL's numeric cannot hold it"},
		{name: "nested too deep", raw: `{"type":"track","userId":"u","event":"E","properties":{"a":` + strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70) + `}}`,
			why: "nesting is capped at MaxDepth (64)"},
		{name: "messageId past 100 characters", raw: `{"type":"track","userId":"u","event":"E","messageId":"` + strings.Repeat("m", 101) + `"}`,
			why: "Segment caps messageId at 100 characters"},
		{name: "userId past 1024 bytes", raw: `{"type":"identify","userId":"` + strings.Repeat("u", 1025) + `"}`,
			why: "indexed columns are capped so that an insert cannot fail on the index"},
		{name: "offset without a colon", raw: `{"type":"track","userId":"u","event":"E","timestamp":"2024-05-01T10:00:00.000+0130"}`,
			why: "some clients send ±hhmm offsets; the time is unambiguous, so it is accepted"},
		{name: "page url not a URI", raw: `{"type":"page","userId":"u","properties":{"url":"not a url"}}`,
			why: "properties are the sender's: stored as sent, not validated beyond being an object"},
		{name: "group employees not an integer", raw: `{"type":"group","userId":"u","groupId":"g","traits":{"employees":"many"}}`,
			why: "traits are the sender's: stored as sent, not validated beyond being an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tt.raw), now)
			ours, theirs := err == nil, schemaAccepts(schemas, tt.raw)
			switch {
			case tt.why == "" && ours != theirs:
				t.Errorf("the sink accepts: %v (%v), the contract accepts: %v", ours, err, theirs)
			case tt.why != "" && ours == theirs:
				t.Errorf("documented as different (%s), but both accept: %v", tt.why, ours)
			}
		})
	}
}

// TestContractCopyIsCurrent checks the copy in testdata against the shared contract, where the
// repository sits beside it (a developer's checkout and CI).
func TestContractCopyIsCurrent(t *testing.T) {
	t.Parallel()
	shared, err := os.ReadFile("../../../shared/spec/asyncapi.yaml")
	if os.IsNotExist(err) {
		t.Log("../shared/spec/asyncapi.yaml is not beside this checkout: only the copy in testdata is used")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile("testdata/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shared, copied) {
		t.Error("internal/event/testdata/asyncapi.yaml differs from ../shared/spec/asyncapi.yaml: copy the contract again")
	}
}
