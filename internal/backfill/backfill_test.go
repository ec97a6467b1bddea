package backfill

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSourcesExpandGlobsDirectoriesAndStdin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"a.ndjson", "b.ndjson.gz", "sub/c.json", "sub/deeper/d.gz"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		os.WriteFile(filepath.Join(dir, name), []byte("{}\n"), 0o644)
	}
	sources, err := Sources([]string{filepath.Join(dir, "*.ndjson*"), filepath.Join(dir, "sub"), "-"}, strings.NewReader("from stdin\n"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sources {
		names = append(names, strings.TrimPrefix(s.Name, dir+"/"))
	}
	if got := strings.Join(names, " "); got != "a.ndjson b.ndjson.gz sub/c.json sub/deeper/d.gz stdin" {
		t.Errorf("sources = %s", got)
	}
	r, _ := sources[4].Open()
	if b, _ := io.ReadAll(r); string(b) != "from stdin\n" {
		t.Errorf("stdin source read %q", b)
	}
	if _, err := Sources([]string{filepath.Join(dir, "nothing-*.gz")}, nil); err == nil {
		t.Error("a glob matching nothing is not an error")
	}
}

func TestGzipIsDetectedByContentNotName(t *testing.T) {
	t.Parallel()
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write([]byte("line one\n"))
	w.Close()
	for name, data := range map[string][]byte{"gzip named .ndjson": z.Bytes(), "plain": []byte("line one\n"), "one byte": []byte("x")} {
		r, err := maybeGunzip(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := io.ReadAll(r)
		want := "line one\n"
		if name == "one byte" {
			want = "x"
		}
		if string(got) != want {
			t.Errorf("%s: read %q", name, got)
		}
	}
}

func TestReadLineSkipsLinesOverTheLimit(t *testing.T) {
	t.Parallel()
	input := "short\n" + strings.Repeat("x", MaxLineBytes+10) + "\nafter"
	r := bufio.NewReaderSize(strings.NewReader(input), 4096)
	var got []string
	for {
		raw, tooLong, err := readLine(r)
		if tooLong {
			got = append(got, "<too long>")
		} else if len(raw) > 0 {
			got = append(got, string(raw))
		}
		if err != nil {
			break
		}
	}
	if strings.Join(got, "|") != "short|<too long>|after" {
		t.Errorf("lines = %q", got)
	}
}
