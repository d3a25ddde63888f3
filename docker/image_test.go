package docker

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// instruction is one Dockerfile instruction with continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// parseDockerfile reads instructions, skipping comments and parser
// directives and joining lines that end in a backslash.
func parseDockerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile("agent/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return parseDockerfile(string(b))
}

func instructions(ins []instruction, cmd string) []string {
	var args []string
	for _, in := range ins {
		if in.cmd == cmd {
			args = append(args, in.args)
		}
	}
	return args
}

// execForm decodes a JSON-array (exec form) argument list.
func execForm(t *testing.T, cmd, args string) []string {
	t.Helper()
	var list []string
	if err := json.Unmarshal([]byte(args), &list); err != nil {
		t.Fatalf("%s %s: want the exec form [\"...\"]: %v", cmd, args, err)
	}
	return list
}

// TestAgentDockerfile checks what can be checked without a Docker engine:
// the stages, a static build stamping real variables, a non-root distroless
// runtime, and an entrypoint, port, volume and config that agree with the
// Kubernetes examples.
func TestAgentDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	froms := instructions(ins, "FROM")
	if len(froms) != 2 {
		t.Fatalf("FROM %q: want a builder and a runtime stage", froms)
	}
	builder := regexp.MustCompile(`^(--platform=\S+ )?golang:(1\.[0-9]+)-bookworm AS (\S+)$`).FindStringSubmatch(froms[0])
	if builder == nil {
		t.Fatalf("builder FROM %q: want golang:1.N-bookworm AS NAME", froms[0])
	}
	if goMod := goDirective(t); goMod != builder[2] {
		t.Errorf("builder is Go %s, go.mod says go %s", builder[2], goMod)
	}
	if froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime FROM %q: want gcr.io/distroless/static-debian12:nonroot", froms[1])
	}

	var build string
	for _, r := range instructions(ins, "RUN") {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "go build -trimpath", `-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT"`, "-o /out/metership ./agent"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build step %q lacks %q", build, want)
		}
	}
	for _, arg := range []string{"VERSION", "COMMIT"} {
		if !slices.ContainsFunc(instructions(ins, "ARG"), func(a string) bool { return a == arg || strings.HasPrefix(a, arg+"=") }) {
			t.Errorf("no ARG %s for the -X flag", arg)
		}
	}
	vars := mainStringVars(t, "../agent")
	for _, v := range []string{"version", "commit"} {
		if !vars[v] {
			t.Errorf("-X main.%s: package main in agent/ has no string variable %s, so the flag would do nothing", v, v)
		}
	}

	if users := instructions(ins, "USER"); len(users) != 1 || !strings.HasPrefix(users[0], "65532") {
		t.Errorf("USER %q: want 65532 (distroless nonroot)", users)
	}
	if ep := instructions(ins, "ENTRYPOINT"); len(ep) != 1 || !slices.Equal(execForm(t, "ENTRYPOINT", ep[0]), []string{"/metership"}) {
		t.Errorf("ENTRYPOINT %q: want [\"/metership\"]", ep)
	}
	cmds := instructions(ins, "CMD")
	if len(cmds) != 1 {
		t.Fatalf("CMD %q: want one", cmds)
	}
	cmd := execForm(t, "CMD", cmds[0])
	if !slices.Equal(cmd, []string{"run", "-c", "/etc/metership/metership.yaml"}) {
		t.Errorf("CMD %q: want run -c /etc/metership/metership.yaml", cmd)
	}
	if exp := instructions(ins, "EXPOSE"); !slices.Equal(exp, []string{fmt.Sprint(agentPort)}) {
		t.Errorf("EXPOSE %q: want %d", exp, agentPort)
	}
	if vol := instructions(ins, "VOLUME"); len(vol) != 1 || !slices.Contains(execForm(t, "VOLUME", vol[0]), "/var/lib/metership") {
		t.Errorf("VOLUME %q: want [\"/var/lib/metership\"]", vol)
	}

	// Files copied from the build context exist, and the baked config is
	// the one CMD loads.
	var bakedConfig string
	for _, c := range instructions(ins, "COPY") {
		fields := strings.Fields(c)
		if strings.HasPrefix(fields[0], "--from=") {
			continue
		}
		var srcs []string
		for _, f := range fields[:len(fields)-1] {
			if !strings.HasPrefix(f, "--") {
				srcs = append(srcs, f)
			}
		}
		for _, src := range srcs {
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
			if fields[len(fields)-1] == cmd[len(cmd)-1] {
				bakedConfig = src
			}
		}
	}
	if bakedConfig != "docker/agent/metership.yaml" {
		t.Fatalf("the config CMD loads is copied from %q, want docker/agent/metership.yaml", bakedConfig)
	}
	text, err := os.ReadFile(filepath.Join("..", bakedConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := checkMetershipConfig(t, string(text), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := net.SplitHostPort(cfg.Server.Listen); port != fmt.Sprint(agentPort) {
		t.Errorf("baked server.listen %q does not use the exposed port %d", cfg.Server.Listen, agentPort)
	}
	if !strings.HasPrefix(cfg.Buffer.Dir, "/var/lib/metership") {
		t.Errorf("baked buffer.dir %s is outside the volume", cfg.Buffer.Dir)
	}
	if u := cfg.Output.URL; strings.HasPrefix(u, "file://") && !strings.HasPrefix(u, "file:///var/lib/metership/") {
		t.Errorf("baked output.url %s writes outside the volume, on a read-only root filesystem", u)
	}

	// The Kubernetes examples run the image with the same command.
	for _, file := range []string{"k8s/sidecar.yaml", "k8s/sidecar-native.yaml"} {
		d := find[*appsv1.Deployment](t, objectsIn(t, file))
		c, _ := agentContainer(t, &d.Spec.Template.Spec)
		if len(c.Command) != 0 {
			t.Errorf("%s: command %q overrides the image's ENTRYPOINT", file, c.Command)
		}
		if !slices.Equal(c.Args, cmd) {
			t.Errorf("%s: args %q differ from the image's CMD %q", file, c.Args, cmd)
		}
	}
}

// goDirective returns the major.minor of go.mod's go line.
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (1\.[0-9]+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// mainStringVars returns the package-level string variables of the main
// package in dir (what -ldflags -X can set).
func mainStringVars(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name != "main" {
			continue
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					isString := false
					if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "string" {
						isString = true
					}
					if vs.Type == nil && i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							isString = true
						}
					}
					if isString {
						vars[n.Name] = true
					}
				}
			}
		}
	}
	return vars
}

// TestDockerignoreKeepsSources checks that the agent image's ignore file
// leaves in what the build copies.
func TestDockerignoreKeepsSources(t *testing.T) {
	b, err := os.ReadFile("agent/Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	needed := []string{"go.mod", "go.sum", "agent/main.go", "agent/tail/tailer.go", "conf/conf.go", "docker/agent/metership.yaml"}
	for _, path := range needed {
		if p := ignoredBy(patterns, path); p != "" {
			t.Errorf("%s is excluded from the build context by %q", path, p)
		}
	}
	for _, path := range []string{".git/HEAD", "bin/metership", "record/record.test"} {
		if ignoredBy(patterns, path) == "" {
			t.Errorf("%s is sent to the build context", path)
		}
	}
}

// ignoredBy returns the first pattern that excludes path or one of its
// parent directories ("" if none), approximating .dockerignore matching:
// filepath.Match per path, "**/" matching any number of directories.
func ignoredBy(patterns []string, path string) string {
	parts := strings.Split(path, "/")
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") {
			continue
		}
		rest, anyDepth := strings.CutPrefix(p, "**/")
		for end := 1; end <= len(parts); end++ {
			for start := 0; start < end; start++ {
				if start > 0 && !anyDepth {
					break
				}
				if ok, _ := filepath.Match(rest, strings.Join(parts[start:end], "/")); ok {
					return p
				}
			}
		}
	}
	return ""
}
