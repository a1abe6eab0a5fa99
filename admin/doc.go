// Package admin is shale's administration API: HTTP/JSON on a Unix socket
// in the data directory (<data_dir>/admin.sock, mode 0600), and the Go
// client the CLI uses.
//
// # Routes
//
// Every route is versioned under /v1. Sizes are bytes (JSON integers);
// names follow core's rules (volumes "VOL", snapshots "VOL@SNAP").
//
//	GET    /v1/volumes                    200 {"volumes": [VolumeInfo...]}
//	POST   /v1/volumes        {name,size} 201 VolumeInfo
//	PATCH  /v1/volumes/{name} {size}      200 VolumeInfo
//	DELETE /v1/volumes/{name}             204 (the volume and its snapshots)
//	GET    /v1/snapshots[?volume=V]       200 {"snapshots": [VolumeInfo...]}
//	POST   /v1/snapshots      {volume,name} 201 VolumeInfo
//	DELETE /v1/snapshots/{vol@snap}       204
//	POST   /v1/clones         {snapshot,volume} 201 VolumeInfo
//	GET    /v1/stats                      200 core.Stats
//
// VolumeInfo and Stats are core's types with their JSON tags. Request
// bodies are single JSON objects with no unknown fields, at most
// MaxRequestBytes long.
//
// # Errors
//
// A failed request gets a JSON body {"error": MESSAGE, "code": CODE}. The
// code names core's error class, and the status follows from it:
//
//	code       core error   status
//	not_found  ErrNotFound  404
//	exists     ErrExists    409
//	invalid    ErrInvalid   400 (also malformed requests)
//	in_use     ErrInUse     409
//	read_only  ErrReadOnly  409
//	no_space   ErrNoSpace   507
//	closed     ErrClosed    503
//	io         ErrIO        500
//	internal   (any other)  500
//
// Two more codes come from the server itself: no_route (404, a path or
// method this server does not know: an older server) and too_large (413).
// The Client turns a code back into the same core error, so errors.Is(err,
// core.ErrNotFound) works across the socket; the message is the server's.
//
// # Limits
//
// The server bounds request bodies (MaxRequestBytes), header size, the time
// to read a request, the time an operation may take (Options.RequestTimeout)
// and the number of requests in progress at once (MaxInflightRequests; more
// wait for a slot until their deadline). Shutdown lets requests in progress
// finish.
package admin
