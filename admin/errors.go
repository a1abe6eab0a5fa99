package admin

import (
	"errors"
	"net/http"

	"github.com/shalestore/shale/core"
)

// Error codes of the JSON error body. See the package documentation.
const (
	CodeNotFound = "not_found"
	CodeExists   = "exists"
	CodeInvalid  = "invalid"
	CodeInUse    = "in_use"
	CodeReadOnly = "read_only"
	CodeNoSpace  = "no_space"
	CodeClosed   = "closed"
	CodeIO       = "io"
	CodeInternal = "internal"
	CodeNoRoute  = "no_route"
	CodeTooLarge = "too_large"
)

// errorClass ties a core error class to its code and HTTP status.
type errorClass struct {
	err    error
	code   string
	status int
}

// classes is the mapping table, most specific first: errors.Is picks the
// first class an error wraps.
var classes = []errorClass{
	{core.ErrNotFound, CodeNotFound, http.StatusNotFound},
	{core.ErrExists, CodeExists, http.StatusConflict},
	{core.ErrInvalid, CodeInvalid, http.StatusBadRequest},
	{core.ErrInUse, CodeInUse, http.StatusConflict},
	{core.ErrReadOnly, CodeReadOnly, http.StatusConflict},
	{core.ErrNoSpace, CodeNoSpace, http.StatusInsufficientStorage},
	{core.ErrClosed, CodeClosed, http.StatusServiceUnavailable},
	{core.ErrIO, CodeIO, http.StatusInternalServerError},
}

// classify returns the code and status an error is sent with.
func classify(err error) (code string, status int) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	var re *requestError
	if errors.As(err, &re) {
		return re.code, re.status
	}
	return CodeInternal, http.StatusInternalServerError
}

// classError returns the core error a code stands for, or nil.
func classError(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// requestError is a problem with the request itself, found before the
// array was asked: malformed JSON, a missing field, a body too large, an
// unknown route.
type requestError struct {
	code   string
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// Is makes a malformed request an invalid argument, as core would call it.
func (e *requestError) Is(target error) bool {
	return e.code == CodeInvalid && target == core.ErrInvalid
}

// errorBody is the JSON body of a failed request.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// Error is a failure the server reported. It unwraps to the core error
// class its code names (errors.Is(err, core.ErrExists)), if any.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the error code from the body (see the package doc); it may
	// be empty for a server that sent none.
	Code string
	// Message is the server's description of the failure.
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the core error class of the code, or nil.
func (e *Error) Unwrap() error {
	if err := classError(e.Code); err != nil {
		return err
	}
	if e.Code == "" {
		// An older or foreign server: fall back on the status alone where
		// it names one class.
		switch e.Status {
		case http.StatusNotFound:
			return core.ErrNotFound
		case http.StatusBadRequest:
			return core.ErrInvalid
		case http.StatusInsufficientStorage:
			return core.ErrNoSpace
		case http.StatusServiceUnavailable:
			return core.ErrClosed
		}
	}
	return nil
}
