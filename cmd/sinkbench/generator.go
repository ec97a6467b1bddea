package main

import (
	"fmt"
	"strconv"
	"sync/atomic"
)

// generator makes realistic Segment events of about 800 bytes, in the mix a website sends:
// half tracks, a quarter pages, then identifies, screens, groups and aliases.
type generator struct {
	seq   atomic.Int64
	parts [20][2]string // per slot of the mix: the JSON before the messageId, and after the userId
}

const commonFields = `"context":{"ip":"203.0.113.42","library":{"name":"analytics.js","version":"next-1.70.0"},` +
	`"locale":"en-US","timezone":"Europe/Berlin","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",` +
	`"page":{"path":"/pricing","referrer":"https://www.google.com/","search":"","title":"Pricing - Example","url":"https://www.example.com/pricing"},` +
	`"campaign":{"name":"spring_sale","source":"newsletter","medium":"email"}},"integrations":{},` +
	`"originalTimestamp":"2024-05-01T10:00:00.123Z","sentAt":"2024-05-01T10:00:00.456Z","receivedAt":"2024-05-01T10:00:01.012Z",` +
	`"timestamp":"2024-05-01T10:00:00.679Z","channel":"client","version":2,"projectId":"proj_8Hk2mZ"`

func newGenerator() *generator {
	g := &generator{}
	kinds := map[string]string{
		"track":    `"event":"Order Completed","properties":{"order_id":"50314b8e9bcf000000000000","total":27.5,"revenue":25,"currency":"USD","products":[{"product_id":"507f1f77bcf86cd799439011","sku":"45790-32","name":"Monopoly","price":19,"quantity":1}]},`,
		"page":     `"name":"Pricing","category":"Marketing","properties":{"path":"/pricing","referrer":"https://www.google.com/","title":"Pricing - Example","url":"https://www.example.com/pricing"},`,
		"identify": `"traits":{"email":"ada@example.com","name":"Ada Lovelace","plan":"enterprise","logins":5,"company":{"name":"Example Inc","employee_count":120}},`,
		"screen":   `"name":"Settings","category":"Account","properties":{"tab":"privacy","variation":"blue"},`,
		"group":    `"groupId":"acct_0042","traits":{"name":"Example Inc","industry":"Software","employees":120,"plan":"enterprise"},`,
		"alias":    `"previousId":"anon_5f1c7a",`,
	}
	mix := []string{"track", "track", "track", "track", "track", "track", "track", "track", "track", "track",
		"page", "page", "page", "page", "page", "identify", "identify", "screen", "group", "alias"}
	for i, kind := range mix {
		g.parts[i] = [2]string{
			`{"type":"` + kind + `","messageId":"`,
			`",` + kinds[kind] + commonFields + `}`,
		}
	}
	return g
}

// next appends a new event to buf and returns it with its messageId.
func (g *generator) next(buf []byte, run string) ([]byte, string) {
	n := g.seq.Add(1)
	id := run + "-" + strconv.FormatInt(n, 36)
	p := g.parts[n%int64(len(g.parts))]
	buf = append(buf, p[0]...)
	buf = append(buf, id...)
	buf = fmt.Appendf(buf, `","userId":"user-%d`, n%5000)
	buf = append(buf, p[1]...)
	return buf, id
}
