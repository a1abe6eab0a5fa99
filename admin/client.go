package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/shalestore/shale/core"
)

// ErrNotRunning means no shale server answers on the admin socket.
var ErrNotRunning = errors.New("shale is not running")

// Client limits.
const (
	// dialTimeout bounds connecting to the socket.
	dialTimeout = 5 * time.Second
	// DefaultClientTimeout bounds a whole call unless the context ends
	// first; a little longer than the server's own limit, so the server's
	// error arrives rather than a bare timeout.
	DefaultClientTimeout = DefaultRequestTimeout + 10*time.Second
	// maxReplyBytes bounds a reply (a stats reply of many volumes is the
	// largest).
	maxReplyBytes = 64 << 20
)

// Client talks to a shale server's admin socket. Its methods are safe for
// concurrent use.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the admin socket at path. It does not
// connect until the first call.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{path: path, http: &http.Client{Transport: tr, Timeout: DefaultClientTimeout}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// do sends a request with an optional JSON body and decodes a JSON reply
// into out (if not nil). Server errors come back as *Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	// The host is a placeholder: the transport dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://shale"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return fmt.Errorf("admin socket %s: reading reply: %w", c.path, err)
	}
	if resp.StatusCode >= 300 {
		var eb errorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
		}
		return &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin socket %s: %s %s: bad reply: %w", c.path, method, path, err)
		}
	}
	return nil
}

// dialError explains a failure to reach the server.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: no admin socket at %s", ErrNotRunning, c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on the admin socket %s (left by a server that stopped)", ErrNotRunning, c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("admin socket %s: permission denied (run as the user shale runs as): %w", c.path, err)
	}
	return fmt.Errorf("admin socket %s: %w", c.path, err)
}

// Volumes lists the volumes, sorted by name.
func (c *Client) Volumes(ctx context.Context) ([]core.VolumeInfo, error) {
	var out VolumeList
	err := c.do(ctx, http.MethodGet, "/v1/volumes", nil, &out)
	return out.Volumes, err
}

// CreateVolume creates an empty volume of size bytes.
func (c *Client) CreateVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	var out core.VolumeInfo
	err := c.do(ctx, http.MethodPost, "/v1/volumes", CreateVolumeRequest{Name: name, Size: size}, &out)
	return out, err
}

// ResizeVolume grows or shrinks a volume to size bytes.
func (c *Client) ResizeVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	var out core.VolumeInfo
	err := c.do(ctx, http.MethodPatch, "/v1/volumes/"+url.PathEscape(name), ResizeVolumeRequest{Size: size}, &out)
	return out, err
}

// DeleteVolume deletes a volume and its snapshots.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil)
}

// Snapshots lists the snapshots of volume, or of every volume if volume
// is "".
func (c *Client) Snapshots(ctx context.Context, volume string) ([]core.VolumeInfo, error) {
	path := "/v1/snapshots"
	if volume != "" {
		path += "?volume=" + url.QueryEscape(volume)
	}
	var out SnapshotList
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Snapshots, err
}

// CreateSnapshot freezes volume's contents as "volume@snap".
func (c *Client) CreateSnapshot(ctx context.Context, volume, snap string) (core.VolumeInfo, error) {
	var out core.VolumeInfo
	err := c.do(ctx, http.MethodPost, "/v1/snapshots", CreateSnapshotRequest{Volume: volume, Name: snap}, &out)
	return out, err
}

// DeleteSnapshot deletes "volume@snap".
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(name), nil, nil)
}

// Clone creates volume from snapshot ("VOL@SNAP").
func (c *Client) Clone(ctx context.Context, snapshot, volume string) (core.VolumeInfo, error) {
	var out core.VolumeInfo
	err := c.do(ctx, http.MethodPost, "/v1/clones", CloneRequest{Snapshot: snapshot, Volume: volume}, &out)
	return out, err
}

// Stats returns the array's figures.
func (c *Client) Stats(ctx context.Context) (core.Stats, error) {
	var out core.Stats
	err := c.do(ctx, http.MethodGet, "/v1/stats", nil, &out)
	return out, err
}
