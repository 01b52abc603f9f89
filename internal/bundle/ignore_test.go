package bundle

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// wildmatchCases are the WM_PATHNAME results of git's wildmatch tests
// (t3070): whether text matches pattern.
var wildmatchCases = []struct {
	match         bool
	text, pattern string
}{
	// Basics.
	{true, `foo`, `foo`}, {false, `foo`, `bar`}, {true, ``, ``}, {true, `foo`, `???`}, {false, `foo`, `??`},
	{true, `foo`, `*`}, {true, `foo`, `f*`}, {false, `foo`, `*f`}, {true, `foo`, `*foo*`},
	{true, `foobar`, `*ob*a*r*`}, {true, `aaaaaaabababab`, `*ab`}, {true, `foo*`, `foo\*`},
	{false, `foobar`, `foo\*bar`}, {true, `f\oo`, `f\\oo`}, {true, `ball`, `*[al]?`}, {false, `ten`, `[ten]`},
	{true, `ten`, `**[!te]`}, {false, `ten`, `**[!ten]`}, {true, `ten`, `t[a-g]n`}, {false, `ten`, `t[!a-g]n`},
	{true, `ton`, `t[!a-g]n`}, {true, `ton`, `t[^a-g]n`}, {true, `a]b`, `a[]]b`}, {true, `a-b`, `a[]-]b`},
	{true, `a]b`, `a[]-]b`}, {false, `aab`, `a[]-]b`}, {true, `aab`, `a[]a-]b`}, {true, `]`, `]`},
	// Slashes.
	{false, `foo/baz/bar`, `foo*bar`}, {false, `foo/baz/bar`, `foo**bar`}, {true, `foobazbar`, `foo**bar`},
	{true, `foo/baz/bar`, `foo/**/bar`}, {true, `foo/baz/bar`, `foo/**/**/bar`}, {true, `foo/b/a/z/bar`, `foo/**/bar`},
	{true, `foo/b/a/z/bar`, `foo/**/**/bar`}, {true, `foo/bar`, `foo/**/bar`}, {true, `foo/bar`, `foo/**/**/bar`},
	{false, `foo/bar`, `foo?bar`}, {false, `foo/bar`, `foo[/]bar`}, {false, `foo/bar`, `foo[^a-z]bar`},
	{false, `foo/bar`, `f[^eiu][^eiu][^eiu][^eiu][^eiu]r`}, {true, `foo-bar`, `f[^eiu][^eiu][^eiu][^eiu][^eiu]r`},
	{true, `foo`, `**/foo`}, {true, `XXX/foo`, `**/foo`}, {true, `bar/baz/foo`, `**/foo`}, {false, `bar/baz/foo`, `*/foo`},
	{false, `foo/bar/baz`, `**/bar*`}, {true, `deep/foo/bar/baz`, `**/bar/*`}, {false, `deep/foo/bar/baz/`, `**/bar/*`},
	{true, `deep/foo/bar/baz/`, `**/bar/**`}, {false, `deep/foo/bar`, `**/bar/*`}, {true, `deep/foo/bar/`, `**/bar/**`},
	{false, `foo/bar/baz`, `**/bar**`}, {true, `foo/bar/baz/x`, `*/bar/**`}, {false, `deep/foo/bar/baz/x`, `*/bar/**`},
	{true, `deep/foo/bar/baz/x`, `**/bar/*/*`},
	// Various.
	{false, `acrt`, `a[c-c]st`}, {true, `acrt`, `a[c-c]rt`}, {false, `]`, `[!]-]`}, {true, `a`, `[!]-]`},
	{false, ``, `\`}, {false, `\`, `\`}, {false, `XXX/\`, `*/\`}, {true, `XXX/\`, `*/\\`}, {true, `@foo`, `@foo`},
	{false, `foo`, `@foo`}, {true, `[ab]`, `\[ab]`}, {true, `[ab]`, `[[]ab]`}, {true, `[ab]`, `[[:]ab]`},
	{false, `[ab]`, `[[::]ab]`}, {true, `[ab]`, `[[:digit]ab]`}, {true, `[ab]`, `[\[:]ab]`}, {true, `?a?b`, `\??\?b`},
	{true, `abc`, `\a\b\c`}, {false, `foo`, ``}, {true, `foo/bar/baz/to`, `**/t[o]`},
	// Classes.
	{true, `a1B`, `[[:alpha:]][[:digit:]][[:upper:]]`}, {false, `a`, `[[:digit:][:upper:][:space:]]`},
	{true, `A`, `[[:digit:][:upper:][:space:]]`}, {true, `1`, `[[:digit:][:upper:][:space:]]`},
	{false, `1`, `[[:digit:][:upper:][:spaci:]]`}, {true, ` `, `[[:digit:][:upper:][:space:]]`},
	{false, `.`, `[[:digit:][:upper:][:space:]]`}, {true, `.`, `[[:digit:][:punct:][:space:]]`},
	{true, `5`, `[[:xdigit:]]`}, {true, `f`, `[[:xdigit:]]`}, {true, `D`, `[[:xdigit:]]`},
	{true, `_`, `[[:alnum:][:alpha:][:blank:][:cntrl:][:digit:][:graph:][:lower:][:print:][:punct:][:space:][:upper:][:xdigit:]]`},
	{true, `.`, `[^[:alnum:][:alpha:][:blank:][:cntrl:][:digit:][:lower:][:space:][:upper:][:xdigit:]]`},
	{true, `5`, `[a-c[:digit:]x-z]`}, {true, `b`, `[a-c[:digit:]x-z]`}, {true, `y`, `[a-c[:digit:]x-z]`},
	{false, `q`, `[a-c[:digit:]x-z]`},
	// Malformed and odd classes.
	{true, `]`, `[\\-^]`}, {false, `[`, `[\\-^]`}, {true, `-`, `[\-_]`}, {true, `]`, `[\]]`}, {false, `\]`, `[\]]`},
	{false, `\`, `[\]]`}, {false, `ab`, `a[]b`}, {false, `a[]b`, `a[]b`}, {false, `ab[`, `ab[`}, {false, `ab`, `[!`},
	{false, `ab`, `[-`}, {true, `-`, `[-]`}, {false, `-`, `[a-`}, {false, `-`, `[!a-`}, {true, `-`, `[--A]`},
	{true, `5`, `[--A]`}, {true, ` `, `[ --]`}, {true, `$`, `[ --]`}, {true, `-`, `[ --]`}, {false, `0`, `[ --]`},
	{true, `-`, `[---]`}, {true, `-`, `[------]`}, {false, `j`, `[a-e-n]`}, {true, `-`, `[a-e-n]`},
	{true, `a`, `[!------]`}, {false, `[`, `[]-a]`}, {true, `^`, `[]-a]`}, {false, `^`, `[!]-a]`},
	{true, `[`, `[!]-a]`}, {true, `^`, `[a^bc]`}, {true, `-b]`, `[a-]b]`}, {false, `\`, `[\]`}, {true, `\`, `[\\]`},
	{false, `\`, `[!\\]`}, {true, `G`, `[A-\\]`}, {false, `aaabbb`, `b*a`}, {false, `aabcaa`, `*ba*`},
	{true, `,`, `[,]`}, {true, `,`, `[\\,]`}, {true, `\`, `[\\,]`}, {true, `-`, `[,-.]`}, {false, `+`, `[,-.]`},
	{false, `-.]`, `[,-.]`}, {true, `2`, `[\1-\3]`}, {true, `3`, `[\1-\3]`}, {false, `4`, `[\1-\3]`},
	{true, `\`, `[[-\]]`}, {true, `[`, `[[-\]]`}, {true, `]`, `[[-\]]`}, {false, `-`, `[[-\]]`},
	// Recursion.
	{true, `-adobe-courier-bold-o-normal--12-120-75-75-m-70-iso8859-1`, `-*-*-*-*-*-*-12-*-*-*-m-*-*-*`},
	{false, `-adobe-courier-bold-o-normal--12-120-75-75-X-70-iso8859-1`, `-*-*-*-*-*-*-12-*-*-*-m-*-*-*`},
	{false, `-adobe-courier-bold-o-normal--12-120-75-75-/-70-iso8859-1`, `-*-*-*-*-*-*-12-*-*-*-m-*-*-*`},
	{true, `XXX/adobe/courier/bold/o/normal//12/120/75/75/m/70/iso8859/1`, `XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*`},
	{false, `XXX/adobe/courier/bold/o/normal//12/120/75/75/X/70/iso8859/1`, `XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*`},
	{true, `abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txt`, `**/*a*b*g*n*t`},
	{false, `abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txtz`, `**/*a*b*g*n*t`},
	{false, `foo`, `*/*/*`}, {false, `foo/bar`, `*/*/*`}, {true, `foo/bba/arr`, `*/*/*`},
	{false, `foo/bb/aa/rr`, `*/*/*`}, {true, `foo/bb/aa/rr`, `**/**/**`}, {true, `abcXdefXghi`, `*X*i`},
	{false, `ab/cXd/efXg/hi`, `*X*i`}, {true, `ab/cXd/efXg/hi`, `*/*X*/*/*i`}, {true, `ab/cXd/efXg/hi`, `**/*X*/**/*i`},
	// Paths.
	{false, `foo`, `fo`}, {true, `foo/bar`, `foo/bar`}, {true, `foo/bar`, `foo/*`}, {false, `foo/bba/arr`, `foo/*`},
	{true, `foo/bba/arr`, `foo/**`}, {false, `foo/bba/arr`, `foo*`}, {false, `foo/bba/arr`, `foo**`},
	{false, `foo/bba/arr`, `foo/*arr`}, {false, `foo/bba/arr`, `foo/**arr`}, {false, `foo/bba/arr`, `foo/*z`},
	{false, `foo/bba/arr`, `foo/**z`}, {false, `ab/cXd/efXg/hi`, `*Xg*i`},
	// Case matters.
	{false, `a`, `[A-Z]`}, {true, `A`, `[A-Z]`}, {false, `A`, `[a-z]`}, {true, `a`, `[a-z]`},
	{false, `a`, `[[:upper:]]`}, {true, `A`, `[[:upper:]]`}, {false, `A`, `[[:lower:]]`}, {true, `a`, `[[:lower:]]`},
	{false, `A`, `[B-Za]`}, {true, `a`, `[B-Za]`}, {false, `A`, `[B-a]`}, {true, `a`, `[B-a]`},
	{false, `z`, `[Z-y]`}, {true, `Z`, `[Z-y]`},
}

func TestWildmatch(t *testing.T) {
	for _, c := range wildmatchCases {
		if got := wildmatch(c.pattern, c.text); got != c.match {
			t.Errorf("wildmatch(%q, %q) = %v, want %v", c.pattern, c.text, got, c.match)
		}
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		name, line string
		want       []rule
	}{
		{"comment", "# x", nil},
		{"blank", "   ", nil},
		{"escaped hash", `\#x`, []rule{{pattern: `\#x`, basename: true}}},
		{"escaped bang", `\!x`, []rule{{pattern: `\!x`, basename: true}}},
		{"negation", "!x", []rule{{pattern: "x", negate: true, basename: true}}},
		{"dir only", "x/", []rule{{pattern: "x", dirOnly: true, basename: true}}},
		{"anchored", "/x", []rule{{pattern: "x"}}},
		{"middle slash", "a/b/", []rule{{pattern: "a/b", dirOnly: true}}},
		{"trailing spaces", "x  ", []rule{{pattern: "x", basename: true}}},
		{"quoted space", `x\  `, []rule{{pattern: `x\ `, basename: true}}},
		{"crlf", "x\r", []rule{{pattern: "x", basename: true}}},
		{"bom", "\xef\xbb\xbfx", []rule{{pattern: "x", basename: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRules([]byte(tt.line), ""); !slices.Equal(got, tt.want) {
				t.Fatalf("parseRules(%q) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

// ignoreVocabulary are the lines the random ignore files are made of:
// every feature of the syntax, about names the random trees use.
var ignoreVocabulary = []string{
	"*.log", "!keep.log", "build/", "/a", "a/", "sub/**", "**/b", "a/**/f.txt", "*.txt", "!*.txt",
	"b", "/sub/f.txt", "x.*", "[fg].*", "[!f]*.log", `\#h`, `\!bang`, "**/node_modules", "node_modules/",
	"sub/*", "*/f.txt", "a/**", "!a/keep.log", "?.txt", "x.d/", "!sub/", "**/*.bin", "[[:alpha:]].txt",
	"#comment", "", "f.txt ", `f.txt\ `, "a/b/", "!b/", "**", "!**/", "sub", "!x.bin", "/*.log", "**/sub/**",
	"b/*.txt", "*", "!*/", "!f.txt", "a/b", "node_modules/**/keep.log", "/b/", "*.d", "!/sub/keep.log",
}

var (
	randomDirs  = []string{"a", "b", "sub", "build", "node_modules", "x.d"}
	randomFiles = []string{"f.txt", "g.log", "keep.log", "x.bin", "#h", "!bang", "f.txt ", "c", "README.md", "q.txt"}
)

// randomTree fills root with files, directories and ignore files.
func randomTree(t *testing.T, r *rand.Rand, root, rel string, depth int) {
	for _, f := range randomFiles {
		if r.IntN(3) == 0 {
			write(t, root, filepath.Join(rel, f), "x")
		}
	}
	if r.IntN(2) == 0 {
		var lines []string
		for range 1 + r.IntN(5) {
			lines = append(lines, ignoreVocabulary[r.IntN(len(ignoreVocabulary))])
		}
		write(t, root, filepath.Join(rel, ".gitignore"), strings.Join(lines, "\n")+"\n")
	}
	if depth == 3 {
		return
	}
	for _, d := range randomDirs {
		if r.IntN(3) == 0 {
			if err := os.MkdirAll(filepath.Join(root, rel, d), 0o755); err != nil {
				t.Fatal(err)
			}
			randomTree(t, r, root, filepath.Join(rel, d), depth+1)
		}
	}
}

// TestIgnoreMatchesGit packs random trees with random .gitignore files
// and checks that the files packed are the ones git sees as untracked and
// not ignored. Each tree is a directory of one repository, so that git
// runs once: a .gitignore applies below its own directory in the same way
// whether that is the repository's root or not.
func TestIgnoreMatchesGit(t *testing.T) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed: nothing to compare with")
	}
	cases := 120
	if testing.Short() {
		cases = 30
	}
	repo := t.TempDir()
	for seed := range cases {
		randomTree(t, rand.New(rand.NewPCG(uint64(seed), 7)), repo, fmt.Sprintf("c%03d", seed), 0)
	}
	home := t.TempDir()
	var out bytes.Buffer
	for _, args := range [][]string{{"init", "-q", "--template="}, {"ls-files", "--others", "--exclude-standard", "-z"}} {
		cmd := exec.Command(gitPath, args...)
		cmd.Dir = repo
		// No user or system configuration: no global excludes file.
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1")
		out.Reset()
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out.String())
		}
	}
	want := make(map[string][]string)
	for name := range strings.SplitSeq(out.String(), "\x00") {
		if c, rel, ok := strings.Cut(name, "/"); ok {
			want[c] = append(want[c], rel)
		}
	}
	for seed := range cases {
		c := fmt.Sprintf("c%03d", seed)
		wd := filepath.Join(repo, c)
		if _, err := os.Stat(wd); err != nil {
			continue // the tree was left empty
		}
		slices.Sort(want[c])
		if got := packedFiles(t, wd); !slices.Equal(got, want[c]) {
			t.Errorf("%s: packed files differ from git's.\n%s\npacked: %q\ngit:    %q",
				c, describeIgnores(t, wd), got, want[c])
		}
	}
}

// describeIgnores prints a tree's ignore files, for failures.
func describeIgnores(t *testing.T, root string) string {
	var b strings.Builder
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		if err == nil && d.Name() == ".gitignore" {
			data, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			fmt.Fprintf(&b, "%s: %q\n", rel, data)
		}
		return nil
	})
	return b.String()
}
