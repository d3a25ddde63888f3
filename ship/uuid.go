package ship

import (
	"strconv"

	"github.com/google/uuid"
)

// objectNamespace is the fixed name-space UUID of metership object ids. It
// must never change: every deployed agent derives its object keys from it.
var objectNamespace = uuid.UUID{
	0x05, 0xc6, 0xb5, 0xc0, 0xbc, 0xfb, 0x4b, 0x49,
	0x99, 0xcb, 0x1b, 0xee, 0x1f, 0x3c, 0xd7, 0xd4,
}

// ObjectUUID returns the id of the object that holds one partition of one
// segment: a name-based (version 5, SHA-1) UUID of keyID, seq and
// partition. keyID is the buffer's (buffer.Buffer.ObjectKeyID: its
// instance id, unique to the buffer directory). The same inputs give the
// same UUID in every process and release, so when a crash hits between
// upload and acknowledgement the segment is re-encoded to the same key,
// the re-upload meets If-None-Match: * (HTTP 412), is found to hold the
// same content, and counts as done: nothing is shipped twice.
func ObjectUUID(keyID string, seq uint64, partition string) string {
	name := make([]byte, 0, len(keyID)+len(partition)+22)
	name = strconv.AppendQuote(name, keyID)
	name = append(name, '/')
	name = strconv.AppendUint(name, seq, 10)
	name = append(name, '/')
	name = append(name, partition...)
	return uuid.NewSHA1(objectNamespace, name).String()
}
