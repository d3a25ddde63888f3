package buffer

// Checkpoint is a source's durable read position, written with the batch
// that carries the records up to Offset. Meta is opaque to the buffer (the
// tailer stores file identity there).
type Checkpoint struct {
	// Key names the source the position belongs to (a file's identity, a
	// Fluent Bit input): a later Checkpoint with the same Key replaces it.
	Key    string
	Offset int64
	Meta   []byte
}

// Batch accumulates the frames of one Write. It is not safe for concurrent
// use; reuse it with Reset so the append path allocates nothing per record.
type Batch struct {
	buf         []byte
	agg         []byte // the FrameAggregate written before buf, or empty
	tag         string
	records     int
	deadLetters int
	checkpoints []Checkpoint
	// minTime and maxTime bound the Time of the batch's frames; valid when
	// records+deadLetters > 0.
	minTime, maxTime int64
	// tooLarge is set when a frame's data exceeds MaxFrameData; Write then
	// refuses the batch with ErrTooLarge, since recovery would reject it.
	tooLarge bool
}

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	b.buf = b.buf[:0]
	b.agg = b.agg[:0]
	b.tag = ""
	b.records = 0
	b.deadLetters = 0
	b.minTime, b.maxTime = 0, 0
	b.tooLarge = false
	for i := range b.checkpoints {
		b.checkpoints[i].Meta = b.checkpoints[i].Meta[:0]
	}
	b.checkpoints = b.checkpoints[:0]
}

// SetTag sets the tag of every frame in the batch (the Fluent Bit tag, or a
// source's tag); it renders as $TAG in object keys.
func (b *Batch) SetTag(tag string) { b.tag = tag }

// Tag returns the batch's tag.
func (b *Batch) Tag() string { return b.tag }

// SetAggregate sets the data of the FrameAggregate written ahead of the
// batch's frames, replacing an earlier one; nil or empty data removes it.
// The data is copied. It only describes the batch: a batch without records
// or dead letters is written without it. Data over MaxFrameData is
// dropped rather than failing the batch: an aggregate is an optimisation,
// its consumer reads the records instead.
func (b *Batch) SetAggregate(data []byte) {
	b.agg = b.agg[:0]
	if len(data) == 0 || len(data) > MaxFrameData {
		return
	}
	b.agg = appendFrame(b.agg, FrameAggregate, 0, data)
}

// AddRecord appends one canonical NDJSON record line (without newline) whose
// meter time is tsMillis. The line is copied.
func (b *Batch) AddRecord(tsMillis int64, line []byte) {
	b.buf = appendFrame(b.buf, FrameRecord, tsMillis, line)
	b.noteFrame(tsMillis, len(line))
	b.records++
}

// AddDeadLetter appends one dead-letter entry (JSON) that arrived at
// tsMillis. The entry is copied.
func (b *Batch) AddDeadLetter(tsMillis int64, entry []byte) {
	b.buf = appendFrame(b.buf, FrameDeadLetter, tsMillis, entry)
	b.noteFrame(tsMillis, len(entry))
	b.deadLetters++
}

// noteFrame tracks the time bounds and the size limit for one data frame;
// it is called before the frame is counted.
func (b *Batch) noteFrame(tsMillis int64, size int) {
	if b.records+b.deadLetters == 0 || tsMillis < b.minTime {
		b.minTime = tsMillis
	}
	if b.records+b.deadLetters == 0 || tsMillis > b.maxTime {
		b.maxTime = tsMillis
	}
	if size > MaxFrameData {
		b.tooLarge = true
	}
}

// SetCheckpoint records that, once this batch is durable, source has been
// consumed up to offset. The last call per source wins. An offset < 0 makes
// the buffer forget the source.
func (b *Batch) SetCheckpoint(source string, offset int64, meta []byte) {
	for i := range b.checkpoints {
		if b.checkpoints[i].Key == source {
			b.checkpoints[i].Offset = offset
			b.checkpoints[i].Meta = append(b.checkpoints[i].Meta[:0], meta...)
			return
		}
	}
	if len(b.checkpoints) < cap(b.checkpoints) {
		b.checkpoints = b.checkpoints[:len(b.checkpoints)+1]
		c := &b.checkpoints[len(b.checkpoints)-1]
		c.Key = source
		c.Offset = offset
		c.Meta = append(c.Meta[:0], meta...)
		return
	}
	b.checkpoints = append(b.checkpoints, Checkpoint{Key: source, Offset: offset, Meta: append([]byte(nil), meta...)})
}

// Records is the number of record frames in the batch.
func (b *Batch) Records() int { return b.records }

// DeadLetters is the number of dead-letter frames in the batch.
func (b *Batch) DeadLetters() int { return b.deadLetters }

// Size is the encoded size of the batch's frames in bytes.
func (b *Batch) Size() int {
	if len(b.buf) == 0 {
		return 0
	}
	return len(b.buf) + len(b.agg)
}

// Empty reports whether the batch has neither frames nor checkpoints.
func (b *Batch) Empty() bool { return len(b.buf) == 0 && len(b.checkpoints) == 0 }
