package docker

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
)

// agentPort is server.listen's default port, which the image exposes and
// the probes use.
const agentPort = 9464

var roleARN = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$`)

// objectsIn returns the decoded objects of one file under docker/.
func objectsIn(t *testing.T, file string) []object {
	t.Helper()
	var objs []object
	for _, o := range loadObjects(t, ".") {
		if o.file == file {
			objs = append(objs, o)
		}
	}
	if len(objs) == 0 {
		t.Fatalf("%s: no Kubernetes objects", file)
	}
	return objs
}

// find returns the single object of a kind in objs.
func find[T any](t *testing.T, objs []object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.value.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T, found %d", zero, len(found))
	}
	return found[0]
}

// agentContainer returns the metership container of a pod: a regular
// container, or an init container (a native sidecar).
func agentContainer(t *testing.T, p *corev1.PodSpec) (c *corev1.Container, isInit bool) {
	t.Helper()
	var found []*corev1.Container
	for i := range p.InitContainers {
		if strings.Contains(p.InitContainers[i].Image, "metership") {
			found, isInit = append(found, &p.InitContainers[i]), true
		}
	}
	for i := range p.Containers {
		if strings.Contains(p.Containers[i].Image, "metership") {
			found = append(found, &p.Containers[i])
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one container with a metership image, found %d", len(found))
	}
	return found[0], isInit
}

// resolvePort turns a probe port (number or container port name) into a
// number.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port name %q is not a port of container %q", port.StrVal, c.Name)
}

// checkProbe requires an HTTP GET probe of path on the agent's port.
func checkProbe(c *corev1.Container, which string, p *corev1.Probe, path string) error {
	if p == nil || p.HTTPGet == nil {
		return fmt.Errorf("%s: want an httpGet probe of %s", which, path)
	}
	if p.HTTPGet.Path != path {
		return fmt.Errorf("%s: path %q, want %q", which, p.HTTPGet.Path, path)
	}
	port, err := resolvePort(c, p.HTTPGet.Port)
	if err != nil {
		return fmt.Errorf("%s: %w", which, err)
	}
	if port != agentPort {
		return fmt.Errorf("%s: port %d, want %d", which, port, agentPort)
	}
	return nil
}

// mountOf returns the mount of c that holds path (the longest mountPath
// that is path or one of its parents).
func mountOf(c *corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = m
		}
	}
	return best
}

func volumeNamed(p *corev1.PodSpec, name string) *corev1.Volume {
	for i := range p.Volumes {
		if p.Volumes[i].Name == name {
			return &p.Volumes[i]
		}
	}
	return nil
}

// globDir returns the directory part of a glob up to its first pattern
// character: the directory a mount must provide.
func globDir(glob string) string {
	dir := filepath.Dir(glob)
	for strings.ContainsAny(dir, "*?[") {
		dir = filepath.Dir(dir)
	}
	return dir
}

// agentConfigs returns the configurations the agent container can load
// from its ConfigMap volumes, keyed by path in the container; active is the
// one its args select (`run -c PATH`).
func agentConfigs(t *testing.T, objs []object, p *corev1.PodSpec, c *corev1.Container) (configs map[string]conf.Config, active string) {
	t.Helper()
	if len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "-c" {
		t.Fatalf("container %q args %q, want [run -c FILE]", c.Name, c.Args)
	}
	active = c.Args[2]
	configs = map[string]conf.Config{}
	for _, m := range c.VolumeMounts {
		v := volumeNamed(p, m.Name)
		if v == nil || v.ConfigMap == nil {
			continue
		}
		var cm *corev1.ConfigMap
		for _, o := range objs {
			if x, ok := o.value.(*corev1.ConfigMap); ok && x.Name == v.ConfigMap.Name {
				cm = x
			}
		}
		if cm == nil {
			t.Fatalf("volume %q: ConfigMap %q is not defined in the same file", v.Name, v.ConfigMap.Name)
		}
		if !m.ReadOnly {
			t.Errorf("config volume %q is mounted read-write", v.Name)
		}
		for key, text := range cm.Data {
			path := filepath.Join(m.MountPath, key)
			for _, item := range v.ConfigMap.Items {
				if item.Key == key {
					path = filepath.Join(m.MountPath, item.Path)
				}
			}
			if !metershipConfigKey(key) {
				continue
			}
			cfg, err := checkMetershipConfig(t, text, true, nil)
			if err != nil {
				t.Fatalf("ConfigMap %s key %s: %v", cm.Name, key, err)
			}
			configs[path] = cfg
		}
	}
	if _, ok := configs[active]; !ok {
		t.Fatalf("container %q loads %s, which no ConfigMap volume provides (have %v)", c.Name, active, slices.Sorted(maps.Keys(configs)))
	}
	return configs, active
}

// goMemLimit parses a GOMEMLIMIT value the way the Go runtime does: a
// number of bytes with an optional B, KiB, MiB, GiB or TiB suffix. Anything
// else makes the runtime refuse to start.
func goMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q: want bytes with an optional B, KiB, MiB, GiB or TiB suffix", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q: %w", s, err)
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// checkAgentBasics checks what every metership container needs, sidecar
// or DaemonSet: probes, resources, a locked-down container and a drain
// that fits the grace period.
func checkAgentBasics(t *testing.T, objs []object, p *corev1.PodSpec, c *corev1.Container, cfg conf.Config) {
	t.Helper()
	if err := checkProbe(c, "livenessProbe", c.LivenessProbe, "/healthz"); err != nil {
		t.Error(err)
	}
	if err := checkProbe(c, "readinessProbe", c.ReadinessProbe, "/readyz"); err != nil {
		t.Error(err)
	}
	if _, port, err := net.SplitHostPort(cfg.Server.Listen); err != nil || port != strconv.Itoa(agentPort) {
		t.Errorf("server.listen %q: want port %d, the probes' port", cfg.Server.Listen, agentPort)
	}

	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[name], c.Resources.Limits[name]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("resources: want %s request and limit, got %q and %q", name, req.String(), lim.String())
		} else if req.Cmp(lim) > 0 {
			t.Errorf("resources: %s request %s above its limit %s", name, req.String(), lim.String())
		}
	}
	memLimit := c.Resources.Limits[corev1.ResourceMemory]
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		n, err := goMemLimit(e.Value)
		if err != nil {
			t.Error(err)
		} else if n >= memLimit.Value() {
			t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", e.Value, memLimit.String())
		}
	}

	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("container %q has no securityContext", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("securityContext.readOnlyRootFilesystem: want true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("securityContext.allowPrivilegeEscalation: want false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("securityContext.privileged: want false")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("securityContext.capabilities.drop: want [ALL]")
	}

	grace := p.TerminationGracePeriodSeconds
	if grace == nil || float64(*grace) <= cfg.Agent.ShutdownTimeout.D().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v: want more than agent.shutdown_timeout %s", derefInt64(grace), cfg.Agent.ShutdownTimeout)
	}

	var sa *corev1.ServiceAccount
	for _, o := range objs {
		if x, ok := o.value.(*corev1.ServiceAccount); ok && x.Name == p.ServiceAccountName {
			sa = x
		}
	}
	if sa == nil {
		t.Fatalf("serviceAccountName %q: no such ServiceAccount in the file", p.ServiceAccountName)
	}
	if arn := sa.Annotations["eks.amazonaws.com/role-arn"]; !roleARN.MatchString(arn) {
		t.Errorf("ServiceAccount %s: eks.amazonaws.com/role-arn %q is not an IAM role ARN", sa.Name, arn)
	}
}

func derefInt64(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// TestSidecarPattern checks both sidecar examples: the agent shares the
// application's log volume read-only, keeps its buffer on its own volume
// sized above buffer.max_size, runs non-root, and is probed on /healthz and
// /readyz.
func TestSidecarPattern(t *testing.T) {
	for _, tc := range []struct {
		file   string
		native bool
	}{
		{"k8s/sidecar.yaml", false},
		{"k8s/sidecar-native.yaml", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			objs := objectsIn(t, tc.file)
			d := find[*appsv1.Deployment](t, objs)
			p := &d.Spec.Template.Spec
			c, isInit := agentContainer(t, p)
			if isInit != tc.native {
				t.Fatalf("agent is an init container: %v, want %v", isInit, tc.native)
			}
			if tc.native && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				t.Fatal("native sidecar: want restartPolicy Always, or the init container blocks the pod forever")
			}
			configs, active := agentConfigs(t, objs, p, c)
			cfg := configs[active]
			checkAgentBasics(t, objs, p, c, cfg)

			if !nonRoot(p, c) {
				t.Error("runAsNonRoot: want true, and no runAsUser 0")
			}
			if cfg.Agent.ID != "" {
				t.Errorf("agent.id %q: leave it empty so the buffer keeps its own id", cfg.Agent.ID)
			}

			if len(cfg.Sources) == 0 {
				t.Fatal("no sources")
			}
			for _, s := range cfg.Sources {
				for _, glob := range s.Paths {
					checkSharedLogs(t, p, c, glob)
				}
			}
			checkSidecarBuffer(t, p, c, cfg)
		})
	}
}

// nonRoot reports whether the container is forced to run as non-root,
// by its own securityContext or the pod's.
func nonRoot(p *corev1.PodSpec, c *corev1.Container) bool {
	runAsNonRoot, uid := (*bool)(nil), (*int64)(nil)
	if psc := p.SecurityContext; psc != nil {
		runAsNonRoot, uid = psc.RunAsNonRoot, psc.RunAsUser
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil {
			runAsNonRoot = sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
	}
	return runAsNonRoot != nil && *runAsNonRoot && (uid == nil || *uid != 0)
}

// checkSharedLogs requires the directory of glob to be a read-only mount of
// a volume that another container of the pod mounts read-write.
func checkSharedLogs(t *testing.T, p *corev1.PodSpec, c *corev1.Container, glob string) {
	t.Helper()
	m := mountOf(c, globDir(glob))
	if m == nil {
		t.Errorf("source %s: no volume of container %q holds %s", glob, c.Name, globDir(glob))
		return
	}
	if !m.ReadOnly {
		t.Errorf("source %s: volume %q should be mounted read-only in the agent", glob, m.Name)
	}
	var writers []string
	for _, other := range append(append([]corev1.Container{}, p.InitContainers...), p.Containers...) {
		if other.Name == c.Name {
			continue
		}
		for _, om := range other.VolumeMounts {
			if om.Name == m.Name && !om.ReadOnly {
				writers = append(writers, other.Name)
			}
		}
	}
	if len(writers) == 0 {
		t.Errorf("source %s: no other container writes volume %q", glob, m.Name)
	}
	if v := volumeNamed(p, m.Name); v == nil || v.EmptyDir == nil {
		t.Errorf("source %s: volume %q should be an emptyDir shared with the application", glob, m.Name)
	}
}

// checkSidecarBuffer requires buffer.dir on a writable volume of its own:
// an emptyDir whose sizeLimit is at least buffer.max_size, or a claim.
func checkSidecarBuffer(t *testing.T, p *corev1.PodSpec, c *corev1.Container, cfg conf.Config) {
	t.Helper()
	m := mountOf(c, cfg.Buffer.Dir)
	if m == nil {
		t.Fatalf("buffer.dir %s is on the container's read-only root filesystem", cfg.Buffer.Dir)
	}
	if m.ReadOnly {
		t.Fatalf("buffer.dir %s: volume %q is mounted read-only", cfg.Buffer.Dir, m.Name)
	}
	v := volumeNamed(p, m.Name)
	switch {
	case v.PersistentVolumeClaim != nil:
	case v.EmptyDir != nil:
		if v.EmptyDir.SizeLimit == nil {
			t.Fatalf("buffer volume %q: want an emptyDir sizeLimit of at least buffer.max_size %s", v.Name, cfg.Buffer.MaxSize)
		}
		if v.EmptyDir.SizeLimit.Cmp(*resource.NewQuantity(int64(cfg.Buffer.MaxSize), resource.BinarySI)) < 0 {
			t.Errorf("buffer volume %q: sizeLimit %s below buffer.max_size %s: the kubelet would evict the pod before back-pressure starts", v.Name, v.EmptyDir.SizeLimit.String(), cfg.Buffer.MaxSize)
		}
	default:
		t.Errorf("buffer volume %q: want an emptyDir or a PersistentVolumeClaim", v.Name)
	}
	for _, s := range cfg.Sources {
		for _, glob := range s.Paths {
			if lm := mountOf(c, globDir(glob)); lm != nil && lm.Name == m.Name {
				t.Errorf("buffer.dir and source %s share volume %q", glob, m.Name)
			}
		}
	}
}

// TestDaemonSetPattern checks the node agent: host logs read-only, the
// buffer on a hostPath that outlives the pod, no capability beyond reading.
func TestDaemonSetPattern(t *testing.T) {
	objs := objectsIn(t, "k8s/daemonset.yaml")
	ds := find[*appsv1.DaemonSet](t, objs)
	p := &ds.Spec.Template.Spec
	c, isInit := agentContainer(t, p)
	if isInit {
		t.Fatal("the DaemonSet agent should be a regular container")
	}
	configs, active := agentConfigs(t, objs, p, c)
	if len(configs) < 2 {
		t.Errorf("want the /var/log/containers config and the hostPath alternative, got %v", slices.Sorted(maps.Keys(configs)))
	}
	checkAgentBasics(t, objs, p, c, configs[active])

	if len(p.Tolerations) == 0 {
		t.Error("no tolerations: the agent would skip tainted nodes")
	}
	if add := c.SecurityContext.Capabilities.Add; len(add) > 1 || len(add) == 1 && add[0] != "DAC_READ_SEARCH" {
		t.Errorf("capabilities.add %v: only DAC_READ_SEARCH is needed to read logs", add)
	}
	if m := mountOf(c, "/var/log"); m == nil || !m.ReadOnly || volumeNamed(p, m.Name).HostPath == nil {
		t.Error("/var/log: want a read-only hostPath mount")
	}

	for path, cfg := range configs {
		for _, s := range cfg.Sources {
			for _, glob := range s.Paths {
				m := mountOf(c, globDir(glob))
				if m == nil || !m.ReadOnly || volumeNamed(p, m.Name).HostPath == nil {
					t.Errorf("%s: source %s is not on a read-only hostPath mount", path, glob)
				}
			}
		}
		m := mountOf(c, cfg.Buffer.Dir)
		if m == nil || m.ReadOnly {
			t.Errorf("%s: buffer.dir %s is not on a writable mount", path, cfg.Buffer.Dir)
			continue
		}
		hp := volumeNamed(p, m.Name).HostPath
		if hp == nil || hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("%s: buffer volume %q: want a hostPath of type DirectoryOrCreate, so the buffer outlives the pod", path, m.Name)
		}
	}
}

// TestDockerJSONMapping feeds the DaemonSet's records mapping a line as
// Docker's json-file driver writes it and checks it yields exactly the
// record the application printed; a CRI-format line, as containerd writes
// it, is rejected (dead-lettered), as the manifest warns.
func TestDockerJSONMapping(t *testing.T) {
	objs := objectsIn(t, "k8s/daemonset.yaml")
	cm := find[*corev1.ConfigMap](t, objs)
	cfg, err := checkMetershipConfig(t, cm.Data["metership.yaml"], true, nil)
	if err != nil {
		t.Fatal(err)
	}
	mapped := newParser(t, cfg)
	meter := newParser(t, conf.Default())

	const printed = `{"customerId":"customer-7","meterApiName":"api-calls","meterValue":2.5,"meterTimeInMillis":1654560000000,"dimensions":{"region":"eu-west-1","team":"search"},"uniqueId":"req-0001"}`
	dockerLine := `{"log":"` + strings.ReplaceAll(printed, `"`, `\"`) + `\n","stream":"stdout","time":"2022-06-07T00:00:00.123456789Z"}`
	src := record.Origin{ID: "file-1", Offset: 0}

	want, _, err := meter.Parse(nil, []byte(printed), src)
	if err != nil {
		t.Fatalf("meter parser: %v", err)
	}
	got, millis, err := mapped.Parse(nil, []byte(dockerLine), src)
	if err != nil {
		t.Fatalf("docker json-file line rejected: %v", err)
	}
	if string(got) != string(want) {
		t.Fatalf("mapped record\n got %s\nwant %s", got, want)
	}
	const exact = `{"customerId":"customer-7","meterApiName":"api-calls","meterValue":2.5,"meterTimeInMillis":1654560000000,"dimensions":{"region":"eu-west-1","team":"search"},"uniqueId":"req-0001"}`
	if string(got) != exact || millis != 1654560000000 {
		t.Fatalf("mapped record %s at %d, want %s", got, millis, exact)
	}

	noID := `{"log":"{\"customerId\":\"customer-7\",\"meterApiName\":\"api-calls\",\"meterValue\":1,\"meterTimeInMillis\":1654560000000}\n","stream":"stdout","time":"2022-06-07T00:00:00Z"}`
	got, _, err = mapped.Parse(nil, []byte(noID), src)
	if err != nil {
		t.Fatalf("record without uniqueId rejected: %v", err)
	}
	if !strings.Contains(string(got), `"uniqueId":"`) {
		t.Fatalf("no derived uniqueId in %s", got)
	}

	criLine := "2022-06-07T00:00:00.123456789Z stdout F " + printed
	if _, _, err := mapped.Parse(nil, []byte(criLine), src); err == nil {
		t.Fatal("CRI-format line accepted; the manifest says it is dead-lettered")
	}
	appLog := `{"log":"GET /healthz 200\n","stream":"stdout","time":"2022-06-07T00:00:00Z"}`
	if _, _, err := mapped.Parse(nil, []byte(appLog), src); err == nil {
		t.Fatal("a non-meter log line was accepted as a record")
	}
}

func newParser(t *testing.T, cfg conf.Config) *record.Parser {
	t.Helper()
	p, err := record.NewParser(record.Options{Format: cfg.Records.Format, Fields: cfg.Records.Fields, MaxLineSize: int(cfg.Records.MaxLineSize)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSidecarAppWritesValidRecords runs the example application's script
// (with the log directory moved to a temp dir and the loop cut to one
// round) and parses what it wrote with the sidecar's own config: the
// example's shell quoting produces real meter records.
func TestSidecarAppWritesValidRecords(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this machine")
	}
	for _, file := range []string{"k8s/sidecar.yaml", "k8s/sidecar-native.yaml"} {
		t.Run(file, func(t *testing.T) {
			objs := objectsIn(t, file)
			d := find[*appsv1.Deployment](t, objs)
			p := &d.Spec.Template.Spec
			agent, _ := agentContainer(t, p)
			configs, active := agentConfigs(t, objs, p, agent)
			cfg := configs[active]

			var app *corev1.Container
			for i := range p.Containers {
				if p.Containers[i].Name == "app" {
					app = &p.Containers[i]
				}
			}
			if app == nil || len(app.Command) != 3 || app.Command[1] != "-c" {
				t.Fatalf("want an app container running /bin/sh -c SCRIPT")
			}
			logDir := globDir(cfg.Sources[0].Paths[0])
			dir := t.TempDir()
			script := strings.ReplaceAll(app.Command[2], logDir+"/", dir+"/")
			if !strings.Contains(script, "sleep 10") {
				t.Fatalf("script has no sleep 10 to cut the loop at:\n%s", script)
			}
			script = strings.Replace(script, "sleep 10", "break", 1)
			if out, err := exec.Command(sh, "-c", script).CombinedOutput(); err != nil {
				t.Fatalf("script: %v\n%s", err, out)
			}
			matches, err := filepath.Glob(filepath.Join(dir, filepath.Base(cfg.Sources[0].Paths[0])))
			if err != nil || len(matches) != 1 {
				t.Fatalf("files matching the source glob: %v %v", matches, err)
			}
			data, err := os.ReadFile(matches[0])
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("want one line, got %q", data)
			}
			rec, _, err := newParser(t, cfg).Parse(nil, []byte(lines[0]), record.Origin{ID: "app", Offset: 0})
			if err != nil {
				t.Fatalf("line %s: %v", lines[0], err)
			}
			if !strings.HasPrefix(string(rec), `{"customerId":"customer-1","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":`) {
				t.Fatalf("record %s", rec)
			}
		})
	}
}
