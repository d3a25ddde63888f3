// Command out_metership is metership's Fluent Bit output plugin, built with
//
//	go build -buildmode=c-shared -o bin/out_metership.so ./plugin
//
// and loaded with `fluent-bit -e out_metership.so` (or a plugins file).
// This file only adapts Fluent Bit's Go proxy ABI: the exported callbacks
// convert their C arguments and call package fluentbit, where all logic
// and its tests live.
package main

import "C"

import (
	"unsafe"

	"github.com/fluent/fluent-bit-go/output"

	"github.com/metership/metership/fluentbit"
)

// version and commit are set by the Makefile (-X main.version=...).
var (
	version = "dev"
	commit  = ""
)

// plugin is the registry of this process's metership outputs: the only
// package-level state, because Fluent Bit's callbacks carry nothing but
// the instance id stored in their context.
var plugin = fluentbit.NewPlugin(nil)

// FLBPluginRegister tells Fluent Bit the plugin's name and kind.
//
//export FLBPluginRegister
func FLBPluginRegister(def unsafe.Pointer) int {
	desc := "metership " + version + ": usage meter records to S3 (Amberflo layout) and AWS Marketplace"
	if commit != "" {
		desc += " (" + commit + ")"
	}
	return output.FLBPluginRegister(def, "metership", desc)
}

// FLBPluginInit starts one `[OUTPUT] Name metership` instance from its
// properties; on any problem it logs it, naming the property, and fails.
//
//export FLBPluginInit
func FLBPluginInit(ctx unsafe.Pointer) int {
	id, err := plugin.Init(configGetter(ctx))
	if err != nil {
		return output.FLB_ERROR
	}
	output.FLBPluginSetContext(ctx, id)
	return output.FLB_OK
}

// configGetter reads the instance's properties ("" when not set).
func configGetter(ctx unsafe.Pointer) func(string) string {
	return func(name string) string { return output.FLBPluginConfigKey(ctx, name) }
}

// FLBPluginFlush is the context-less flush of old Fluent Bit versions: it
// serves a single instance.
//
//export FLBPluginFlush
func FLBPluginFlush(data unsafe.Pointer, length C.size_t, tag *C.char) int {
	return plugin.FlushSole(chunk(data, length), C.GoString(tag))
}

// FLBPluginFlushCtx appends one chunk to the instance of ctx. Fluent Bit
// calls it concurrently when the output has Workers.
//
//export FLBPluginFlushCtx
func FLBPluginFlushCtx(ctx, data unsafe.Pointer, length C.size_t, tag *C.char) int {
	id, ok := output.FLBPluginGetContext(ctx).(uint64)
	if !ok {
		return output.FLB_ERROR
	}
	return plugin.Flush(id, chunk(data, length), C.GoString(tag))
}

// chunk views Fluent Bit's buffer without copying; fluentbit copies what
// it keeps before the flush returns.
func chunk(data unsafe.Pointer, length C.size_t) []byte {
	if data == nil || length <= 0 {
		return nil
	}
	return unsafe.Slice((*byte)(data), int(length))
}

// FLBPluginExit is the context-less exit: every instance drains.
//
//export FLBPluginExit
func FLBPluginExit() int {
	return plugin.ExitAll()
}

// FLBPluginExitCtx drains the instance of ctx: seal, upload and report
// within agent_shutdown_timeout; the rest stays on disk for the next start.
//
//export FLBPluginExitCtx
func FLBPluginExitCtx(ctx unsafe.Pointer) int {
	id, ok := output.FLBPluginGetContext(ctx).(uint64)
	if !ok {
		return output.FLB_ERROR
	}
	return plugin.Exit(id)
}

// FLBPluginUnregister frees what FLBPluginRegister allocated.
//
//export FLBPluginUnregister
func FLBPluginUnregister(def unsafe.Pointer) {
	output.FLBPluginUnregister(def)
}

func main() {}
