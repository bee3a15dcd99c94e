package envd

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/paddock-dev/paddock/internal/httperr"
)

// errorBody is envd's REST error shape: the HTTP status again, and a
// message.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// isRPC reports a Connect call: its path is /<package>.<Service>/<Method>.
func isRPC(r *http.Request) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	return ok && strings.Contains(svc, ".")
}

var errorWriter = connect.NewErrorWriter()

// writeError answers err outside a Connect handler: in the Connect
// protocol's shape for a Connect call (so the SDK raises the matching
// error class), else in envd's REST shape, with paddock's status for it.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return // another replica runs the sandbox, and answered
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	status, _ := httperr.Status(err)
	h.logError(r, status, err)
	if isRPC(r) && errorWriter.IsSupported(r) {
		_ = errorWriter.Write(w, r, rpcError(err))
		return
	}
	httperr.WriteJSON(w, status, errorBody{Code: status, Message: httperr.Message(err, status)})
}

func (h *Handler) logError(r *http.Request, status int, err error) {
	switch {
	case status == http.StatusInternalServerError:
		h.cfg.Logger.Error("envd: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case status >= 500 && status != http.StatusNotImplemented && status != http.StatusServiceUnavailable:
		h.cfg.Logger.Warn("envd: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
}

// rpcError is err as a Connect error: the code of paddock's status for it
// (httperr, the one mapping of error kinds) and the message a client may
// see. An error that already is a *connect.Error passes unchanged.
func rpcError(err error) *connect.Error {
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, context.Canceled) {
		return connect.NewError(connect.CodeCanceled, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	status, _ := httperr.Status(err)
	return connect.NewError(codeOf(status), errors.New(httperr.Message(err, status)))
}

// codeOf is the Connect code of an HTTP status, the inverse of the
// protocol's own code-to-status table where it has one.
func codeOf(status int) connect.Code {
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return connect.CodeNotFound
	case http.StatusConflict:
		return connect.CodeFailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusPaymentRequired:
		return connect.CodeResourceExhausted
	case http.StatusNotImplemented, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return connect.CodeUnimplemented
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return connect.CodeUnavailable
	case http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeInternal
}

// errorInterceptor turns what a handler returns into a Connect error and
// logs the internal ones, so handlers return paddock's errors as the rest
// of the code base does.
type errorInterceptor struct{ h *Handler }

var _ connect.Interceptor = errorInterceptor{}

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			return nil, i.convert(ctx, req.Spec().Procedure, err)
		}
		return res, nil
	}
}

func (i errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return i.convert(ctx, conn.Spec().Procedure, err)
		}
		return nil
	}
}

func (i errorInterceptor) convert(ctx context.Context, procedure string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return connect.NewError(connect.CodeCanceled, err)
	}
	if status, _ := httperr.Status(err); status == http.StatusInternalServerError {
		if ce := new(connect.Error); !errors.As(err, &ce) {
			i.h.cfg.Logger.Error("envd: internal error", "procedure", procedure, "err", err)
		}
	}
	return rpcError(err)
}
