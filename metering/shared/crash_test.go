//go:build unix

package shared

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/metership/metership/metering"
	"github.com/metership/metership/ship"
)

// Environment of a crash child.
const (
	envState   = "METERSHIP_SHARED_STATE"
	envS3      = "METERSHIP_SHARED_S3" // endpoint,access,secret
	envEmu     = "METERSHIP_SHARED_EMULATOR"
	envDir     = "METERSHIP_SHARED_DIR"
	envNow     = "METERSHIP_SHARED_NOW"
	envUsage   = "METERSHIP_SHARED_USAGE"
	envCrashAt = "METERSHIP_SHARED_CRASH_AT"
)

// runChild is a replica in its own process: it hands its usage, steps,
// and SIGKILLs itself at the crash point. Reaching the end exits 3.
func runChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	now, err := time.Parse(time.RFC3339, os.Getenv(envNow))
	if err != nil {
		return fail(err)
	}
	endpoint, creds, _ := strings.Cut(os.Getenv(envS3), ",")
	access, secret, _ := strings.Cut(creds, ",")
	store, err := Open(context.Background(), os.Getenv(envState), ship.S3Options{Endpoint: endpoint, ForcePathStyle: true, Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(access, secret, "")})
	if err != nil {
		return fail(err)
	}
	defer store.Close()
	client, tr := mmClient(os.Getenv(envEmu), "AKIDCHILD")
	defer tr.CloseIdleConnections()
	cfg := agentConfig(store, os.Getenv(envDir), "pod-a", client, func() time.Time { return now })
	point := os.Getenv(envCrashAt)
	cfg.crash = func(p string) {
		if p == point {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	a, err := New(cfg)
	if err != nil {
		return fail(err)
	}
	var us []metering.HourUsage
	if err := json.Unmarshal([]byte(os.Getenv(envUsage)), &us); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	if err := a.Hand(ctx, now.Truncate(time.Hour), us); err != nil {
		return fail(err)
	}
	if err := a.Step(ctx); err != nil {
		return fail(err)
	}
	return 3
}

// The replica that claims an hour is SIGKILLed before its claim, after
// it, after the BatchMeterUsage call was answered (AWS holds the records,
// the answer is lost), and after the result: the other replica finishes
// the hour; nothing is missing or billed twice, and the killed replica,
// restarted, finds its partial merged.
func TestClaimerKilled(t *testing.T) {
	for _, point := range []string{"partial-created", "before-claim", "claim-created", "after-call", "result-written"} {
		t.Run(point, func(t *testing.T) {
			w := newWorld(t)
			w.clk.Set(hr(11).Add(10 * time.Minute))
			aDir := tempDir(t, "a")
			b := w.agent("pod-b", tempDir(t, "b"))
			w.clk.Set(hr(12).Add(6 * time.Minute))
			uA := []metering.HourUsage{usage(hr(11), "c1", "api_calls", 1_600_000_000, 2), usage(hr(11), "c2", "api_calls", 5e9, 1)}
			uB := []metering.HourUsage{usage(hr(11), "c1", "api_calls", 2_700_000_000, 3)}
			// pod-b has written its partial and is alive; pod-a, in
			// its own process, writes its partial and claims first.
			beat(t, b)
			if err := b.Hand(context.Background(), hr(12), uB); err != nil {
				t.Fatal(err)
			}
			if err := b.writePartials(context.Background()); err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(uA)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", envState+"="+w.state,
				envS3+"="+w.s3.Endpoint()+","+w.s3.AccessKey()+","+w.s3.SecretKey(), envEmu+"="+w.emURL,
				envDir+"="+aDir, envNow+"="+w.clk.Now().Format(time.RFC3339), envUsage+"="+string(body), envCrashAt+"="+point)
			out, err := cmd.CombinedOutput()
			if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() || st.Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die at %s: %v\n%s", point, err, out)
			}
			steps(t, 2, b)
			a := w.agent("pod-a", aDir) // restarted: same journal
			if err := a.Hand(context.Background(), hr(12), uA); err != nil {
				t.Fatal(err)
			}
			steps(t, 2, a, b)
			checkBilled(t, w.em, map[key]int64{{hr(11), "c1", "api_calls"}: 4, {hr(11), "c2", "api_calls"}: 5})
			if !a.Settled() || !b.Settled() || late(t, a) != 0 {
				t.Fatalf("settled %v %v, carried %d", a.Settled(), b.Settled(), late(t, a))
			}
		})
	}
}
