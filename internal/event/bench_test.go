package event

import (
	"encoding/json"
	"testing"
)

// benchEvent is a realistic 800-byte track event, as Segment's Webhooks destination sends it.
var benchEvent = []byte(`{"type":"track","messageId":"ajs-next-1714557600123-4f1c","userId":"user-1234",` +
	`"event":"Order Completed","properties":{"order_id":"50314b8e9bcf000000000000","total":27.5,"revenue":25,` +
	`"currency":"USD","products":[{"product_id":"507f1f77bcf86cd799439011","sku":"45790-32","name":"Monopoly","price":19,"quantity":1}]},` +
	`"context":{"ip":"203.0.113.42","library":{"name":"analytics.js","version":"next-1.70.0"},"locale":"en-US",` +
	`"timezone":"Europe/Berlin","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",` +
	`"page":{"path":"/pricing","referrer":"https://www.google.com/","search":"","title":"Pricing \u2014 Example","url":"https://www.example.com/pricing"},` +
	`"campaign":{"name":"spring_sale","source":"newsletter","medium":"email"}},"integrations":{},` +
	`"originalTimestamp":"2024-05-01T10:00:00.123Z","sentAt":"2024-05-01T10:00:00.456Z","receivedAt":"2024-05-01T10:00:01.012Z",` +
	`"timestamp":"2024-05-01T10:00:00.679Z","channel":"client","version":2,"projectId":"proj_8Hk2mZ"}`)

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		if _, err := Decode(benchEvent, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodingJSONMap is the reference the decoder is measured against: encoding/json into
// a map of raw values, the first step of the straightforward approach, before any validation.
func BenchmarkEncodingJSONMap(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(benchEvent, &m); err != nil {
			b.Fatal(err)
		}
	}
}
