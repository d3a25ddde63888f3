package fluentbit

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/pipeline"
)

// Chunk memory: what an Instance knows about the chunks Fluent Bit sent,
// kept in memory and, so that it survives a restart, as buffer checkpoints
// written in the chunks' own batches (durable together with the records).
//
//   - Partial chunks: a chunk too large for one batch is committed in
//     pieces; "fluentbit-chunk:<key>" holds how many of its events are
//     durable, so a retry skips them.
//   - Done chunks: "fluentbit-done:<key>" marks the last maxDoneChunks
//     chunks committed whole. Fluent Bit deletes a chunk only after FLB_OK;
//     dying in between, it sends the chunk again after restarting, and the
//     chunk is answered FLB_OK without being appended (and counted by
//     metering) twice.
//
// A chunk's key hashes its tag and bytes: identical chunks give identical
// uniqueIds anyway (tag@time, index), so downstream deduplication would
// drop the second one too. Forgotten chunks' checkpoints are removed by
// the next batch written, so the buffer keeps no more than memory does.
const (
	partialSourcePrefix = "fluentbit-chunk:"
	doneSourcePrefix    = "fluentbit-done:"
	// maxPartialChunks and maxDoneChunks bound what is remembered; the
	// oldest is forgotten first.
	maxPartialChunks = 64
	maxDoneChunks    = 256
)

type chunkMemory struct {
	mu           sync.Mutex
	partial      map[xxh3.Uint128]int
	partialOrder []xxh3.Uint128 // oldest first
	done         map[xxh3.Uint128]bool
	doneOrder    []xxh3.Uint128 // oldest first
	// drop are checkpoints of forgotten chunks, for the next batch.
	drop []string
}

// newChunkMemory restores the memory from the buffer's checkpoints.
func newChunkMemory(cps []buffer.Checkpoint) *chunkMemory {
	m := &chunkMemory{partial: map[xxh3.Uint128]int{}, done: map[xxh3.Uint128]bool{}}
	type doneAt struct {
		key xxh3.Uint128
		at  int64
	}
	var done []doneAt
	for _, cp := range cps {
		if key, ok := parseChunkSource(cp.Key, partialSourcePrefix); ok && cp.Offset > 0 {
			m.notePartial(key, int(cp.Offset))
		} else if key, ok := parseChunkSource(cp.Key, doneSourcePrefix); ok {
			done = append(done, doneAt{key, cp.Offset})
		}
	}
	slices.SortFunc(done, func(a, b doneAt) int { return cmp.Compare(a.at, b.at) })
	for _, d := range done {
		m.noteDone(d.key)
	}
	return m
}

// chunkKey identifies a chunk by its tag and bytes.
func chunkKey(tag string, data []byte) xxh3.Uint128 {
	return xxh3.Hash128Seed(data, xxh3.HashString(tag))
}

func chunkSource(prefix string, key xxh3.Uint128) string {
	b := key.Bytes()
	return prefix + hex.EncodeToString(b[:])
}

func parseChunkSource(source, prefix string) (xxh3.Uint128, bool) {
	h, ok := strings.CutPrefix(source, prefix)
	if !ok {
		return xxh3.Uint128{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		return xxh3.Uint128{}, false
	}
	return xxh3.Uint128{Hi: binary.BigEndian.Uint64(b), Lo: binary.BigEndian.Uint64(b[8:])}, true
}

// isDone reports whether the chunk was committed whole recently.
func (m *chunkMemory) isDone(key xxh3.Uint128) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done[key]
}

// begin starts writing a chunk into in's batch: it returns how many of
// the chunk's events are durable from an earlier partial flush, and adds
// to the batch the removal of forgotten chunks' checkpoints, returned for
// committed.
func (m *chunkMemory) begin(key xxh3.Uint128, in *pipeline.Ingester) (from int, dropped []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, src := range m.drop {
		in.SetCheckpoint(src, -1, nil)
	}
	return m.partial[key], slices.Clone(m.drop)
}

// committed notes that a batch begun by begin is durable: the removals it
// carried, and the chunk whole (done < 0) or its first done events.
func (m *chunkMemory) committed(key xxh3.Uint128, dropped []string, done int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(dropped) > 0 {
		m.drop = slices.DeleteFunc(m.drop, func(s string) bool { return slices.Contains(dropped, s) })
	}
	if done >= 0 {
		m.notePartial(key, done)
		return
	}
	if _, ok := m.partial[key]; ok {
		delete(m.partial, key)
		m.partialOrder = slices.DeleteFunc(m.partialOrder, func(k xxh3.Uint128) bool { return k == key })
	}
	m.noteDone(key)
}

// markWhole adds to in's batch, which ends the chunk, the chunk's done
// mark (its offset is the time, for the order of a restore) and, if it
// was committed in part, the removal of its progress.
func markWhole(in *pipeline.Ingester, key xxh3.Uint128, now time.Time, partial bool) {
	if partial {
		in.SetCheckpoint(chunkSource(partialSourcePrefix, key), -1, nil)
	}
	in.SetCheckpoint(chunkSource(doneSourcePrefix, key), now.UnixNano(), nil)
}

// markProgress adds to in's batch, a piece of the chunk, how many of the
// chunk's events are durable with it.
func markProgress(in *pipeline.Ingester, key xxh3.Uint128, done int) {
	in.SetCheckpoint(chunkSource(partialSourcePrefix, key), int64(done), nil)
}

func (m *chunkMemory) notePartial(key xxh3.Uint128, done int) {
	if _, ok := m.partial[key]; !ok {
		m.partialOrder = append(m.partialOrder, key)
		if len(m.partialOrder) > maxPartialChunks {
			old := m.partialOrder[0]
			delete(m.partial, old)
			m.partialOrder = m.partialOrder[1:]
			m.drop = append(m.drop, chunkSource(partialSourcePrefix, old))
		}
	}
	m.partial[key] = done
}

func (m *chunkMemory) noteDone(key xxh3.Uint128) {
	if m.done[key] {
		return
	}
	m.done[key] = true
	m.doneOrder = append(m.doneOrder, key)
	if len(m.doneOrder) > maxDoneChunks {
		old := m.doneOrder[0]
		delete(m.done, old)
		m.doneOrder = m.doneOrder[1:]
		m.drop = append(m.drop, chunkSource(doneSourcePrefix, old))
	}
}
