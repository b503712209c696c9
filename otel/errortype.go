package redislockotel

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/redis/rueidis"
	"github.com/seed-223c80a0/redislock"
)

// errType is a value of the error.type attribute. Every value is fixed in
// advance, so that the attribute sets of the errors counter can be made at
// construction and the values never vary with a Go type name or a message.
type errType uint8

const (
	errOther            errType = iota // _OTHER: none of the below
	errCanceled                        // context.Canceled
	errDeadlineExceeded                // context.DeadlineExceeded
	errInvalidTTL                      // redislock.ErrInvalidTTL
	errInvalidKey                      // redislock.ErrInvalidKey
	errInvalidToken                    // redislock.ErrInvalidToken
	errInvalidMetadata                 // redislock.ErrInvalidMetadata
	errCrossSlot                       // redislock.ErrCrossSlot
	errInvalidLimit                    // redislock.ErrInvalidLimit
	errNotObtained                     // redislock.ErrNotObtained (never an error outcome today)
	errLockNotHeld                     // redislock.ErrLockNotHeld (never an error outcome today)
	errNotReplicated                   // redislock.ErrNotReplicated
	errNoQuorum                        // redislock.ErrNoQuorum (a quorum's nodes failed)
	errClientClosed                    // rueidis.ErrClosing
	errTransport                       // a net.Error, io.EOF, io.ErrUnexpectedEOF
	errRedisFirst                      // the first of the Redis error prefixes below
)

// redisPrefixes are the Redis error replies recorded by their prefix (the
// first word of the reply, as Redis' semantic conventions ask); a reply with
// any other prefix is recorded as redisOther.
var redisPrefixes = [...]string{
	"ERR", "WRONGTYPE", "NOSCRIPT", "NOPERM", "NOAUTH", "WRONGPASS", "BUSY",
	"LOADING", "TRYAGAIN", "CLUSTERDOWN", "CROSSSLOT", "MOVED", "ASK",
	"READONLY", "OOM", "MASTERDOWN", "MISCONF", "NOREPLICAS", "EXECABORT",
}

// redisOther is the error.type of a Redis error reply with an unlisted
// prefix.
const redisOther = "redis_error"

const numErrTypes = int(errRedisFirst) + len(redisPrefixes) + 1

// errTypeNames are the values of error.type, indexed by errType.
var errTypeNames = func() [numErrTypes]string {
	names := [numErrTypes]string{
		errOther:            "_OTHER",
		errCanceled:         "canceled",
		errDeadlineExceeded: "deadline_exceeded",
		errInvalidTTL:       "invalid_ttl",
		errInvalidKey:       "invalid_key",
		errInvalidToken:     "invalid_token",
		errInvalidMetadata:  "invalid_metadata",
		errCrossSlot:        "cross_slot",
		errInvalidLimit:     "invalid_limit",
		errNotObtained:      "not_obtained",
		errLockNotHeld:      "lock_not_held",
		errNotReplicated:    "not_replicated",
		errNoQuorum:         "no_quorum",
		errClientClosed:     "client_closed",
		errTransport:        "transport",
	}
	for i, p := range redisPrefixes {
		names[int(errRedisFirst)+i] = p
	}
	names[numErrTypes-1] = redisOther
	return names
}()

// sentinels are checked in order, after the ctx errors.
var sentinels = [...]struct {
	err error
	typ errType
}{
	{redislock.ErrInvalidTTL, errInvalidTTL},
	{redislock.ErrInvalidKey, errInvalidKey},
	{redislock.ErrInvalidToken, errInvalidToken},
	{redislock.ErrInvalidMetadata, errInvalidMetadata},
	{redislock.ErrCrossSlot, errCrossSlot},
	{redislock.ErrInvalidLimit, errInvalidLimit},
	{redislock.ErrNotObtained, errNotObtained},
	{redislock.ErrLockNotHeld, errLockNotHeld},
	{redislock.ErrNotReplicated, errNotReplicated},
	{rueidis.ErrClosing, errClientClosed},
}

// classifyError returns the error.type of err, an error that an operation
// ended with. A ctx error comes first, as in redislock's own outcome: an
// error that is both ErrNotObtained and context.DeadlineExceeded (the ctx
// ended while waiting) is deadline_exceeded.
func classifyError(err error) errType {
	switch {
	case err == nil:
		return errOther
	case errors.Is(err, redislock.ErrNoQuorum):
		return errNoQuorum // before the ctx errors: it wraps its nodes' timeouts
	case errors.Is(err, context.DeadlineExceeded):
		return errDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return errCanceled
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.typ
		}
	}
	if re := (*rueidis.RedisError)(nil); errors.As(err, &re) {
		return redisErrType(re.Error())
	}
	if ne := net.Error(nil); errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTransport
	}
	return errOther
}

// redisErrType returns the errType of a Redis error reply.
func redisErrType(msg string) errType {
	prefix, _, _ := strings.Cut(msg, " ")
	for i, p := range redisPrefixes {
		if prefix == p {
			return errRedisFirst + errType(i)
		}
	}
	return errType(numErrTypes - 1)
}
