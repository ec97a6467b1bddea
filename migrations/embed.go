// Package migrations holds segment-sink's schema as goose SQL migrations, embedded in the binary
// so that `segment-sink migrate` and start-up need no files on disk.
package migrations

import "embed"

// FS holds every migration file. goose reads them in version order.
//
//go:embed *.sql
var FS embed.FS
