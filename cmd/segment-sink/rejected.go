package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segment-sink/segment-sink/internal/event"
	"github.com/segment-sink/segment-sink/internal/httpapi"
	"github.com/segment-sink/segment-sink/internal/store"
)

// rejected runs `segment-sink rejected list|replay`: it shows the refused requests kept in
// quarantine, and sends them again to a running sink once the cause is fixed.
func rejected(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return errors.New("rejected needs list or replay")
	}
	action := args[0]
	var (
		all    bool
		limit  int
		ids    string
		target string
	)
	cfg, _, err := load(args[1:], getenv, stdout, func(fs *flag.FlagSet) {
		fs.BoolVar(&all, "all", false, "include requests already replayed")
		fs.IntVar(&limit, "limit", 100, "show or replay at most this many, newest first")
		fs.StringVar(&ids, "id", "", "comma-separated ids to replay or show (default: every one not yet replayed)")
		fs.StringVar(&target, "url", "", "the sink to replay to (default: http://127.0.0.1 on LISTEN_ADDR's port)")
	})
	if err != nil {
		return err
	}
	filter := store.RejectedFilter{IncludeReplayed: all, Limit: limit}
	for _, id := range strings.Split(ids, ",") {
		if id = strings.TrimSpace(id); id != "" {
			n, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				return fmt.Errorf("--id %q: not a number", id)
			}
			filter.IDs = append(filter.IDs, n)
		}
	}
	s, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	rows, err := s.Rejected(ctx, filter)
	if err != nil {
		return err
	}
	if action == "list" {
		return listRejected(stdout, rows)
	}
	if target == "" {
		_, port, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("LISTEN_ADDR %q: %w", cfg.ListenAddr, err)
		}
		target = "http://" + net.JoinHostPort("127.0.0.1", port)
	}
	return replayRejected(ctx, s, rows, strings.TrimSuffix(target, "/"), cfg.SharedSecrets, cfg.WriteKeys, stdout)
}

func listRejected(w io.Writer, rows []store.StoredRejection) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tPATH\tSTATUS\tREASON\tFIELD\tINDEX\tBYTES\tREPLAYED\tERROR")
	for _, r := range rows {
		x := r.Rejection
		index, replayed := "", ""
		if x.Index >= 0 {
			index = strconv.Itoa(x.Index)
		}
		if r.ReplayedAt != nil {
			replayed = r.ReplayedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, x.ReceivedAt.UTC().Format(time.RFC3339),
			x.Path, x.Status, x.Reason, x.Field, index, len(x.Body), replayed, x.Error)
	}
	return tw.Flush()
}

// replayRejected sends each request again as its sender would: signed with the first shared
// secret (webhooks) or with the first write key (tracking API). An accepted one is marked
// replayed; a refused one stays, with the new answer printed.
func replayRejected(ctx context.Context, s *store.Store, rows []store.StoredRejection, target string, secrets, keys []string, w io.Writer) error {
	client := &http.Client{Timeout: 10 * time.Second}
	refused := 0
	for _, r := range rows {
		x := r.Rejection
		path, contentType := x.Path, x.ContentType
		if path == "import" {
			// A line of an archive is one event, read with the webhook's rules.
			path, contentType = "/webhook", "application/json"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+path, bytes.NewReader(x.Body))
		if err != nil {
			refused++
			fmt.Fprintf(w, "#%d cannot be sent to %s%s: %v\n", r.ID, target, path, err)
			continue
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set(httpapi.ReplayHeader, strconv.FormatInt(r.ID, 10))
		switch {
		case path == "/webhook" && len(secrets) > 0:
			signed := x.Body
			if elems, err := event.SplitArray(x.Body); err == nil && len(elems) > 0 {
				signed = elems[0] // an array is signed over its first element
			}
			req.Header.Set("X-Signature", httpapi.Sign(secrets[0], signed))
		case strings.HasPrefix(path, "/v1/") && len(keys) > 0:
			req.SetBasicAuth(keys[0], "")
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("replay #%d to %s: %w", r.ID, target, err)
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			refused++
			fmt.Fprintf(w, "#%d still refused: %d %s\n", r.ID, resp.StatusCode, bytes.TrimSpace(answer))
			continue
		}
		if err := s.MarkReplayed(ctx, r.ID); err != nil {
			return err
		}
		fmt.Fprintf(w, "#%d replayed: %s\n", r.ID, bytes.TrimSpace(answer))
	}
	fmt.Fprintf(w, "replayed %d, still refused %d\n", len(rows)-refused, refused)
	if refused > 0 {
		return fmt.Errorf("%d requests still refused", refused)
	}
	return nil
}
