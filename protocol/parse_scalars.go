package protocol

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Scalar readers. Each takes the unresolved value node and the key's line
// (used when the value is empty), reports problems and returns ok=false.

// str reads a string value. A `!!str` tag turns any scalar into its text.
func (p *taskParser) str(field string, n ast.Node, line int, what string) (string, bool) {
	r, tag := p.resolve(n)
	if text, ok := textOf(r); ok {
		return text, true
	}
	if v, ok := r.(ast.ScalarNode); ok && tag == "!!str" {
		return v.GetToken().Value, true
	}
	p.errorf(lineAt(n, line), field, "must be %s, got %s", what, describe(r))
	return "", false
}

// scalarText reads a string, number or boolean as the text written in the
// file (`1.10` stays "1.10", `true` stays "true").
func (p *taskParser) scalarText(field string, n ast.Node, line int, what string) (string, bool) {
	r, _ := p.resolve(n)
	if text, ok := textOf(r); ok {
		return text, true
	}
	switch v := r.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return v.GetToken().Value, true
	case nil:
		p.errorf(lineAt(n, line), field, "has no value; give it %s", what)
	default:
		p.errorf(lineAt(n, line), field, "must be %s, got %s", what, describe(r))
	}
	return "", false
}

// --- numbers. Every number in a task file (counts, seconds, rates, cpus,
// memory) is read by number under a numberRule, so they all accept the
// same spellings and report the same problems in the same words.

// numberRule is what one number field accepts and how its messages read.
// Messages end with advice: "; use <want>", or " (<hint>)" for a rule
// with a hint.
type numberRule struct {
	// want is what to write, as in "use a whole number >= 1 (e.g. 2)".
	want string
	// hint, when set, is the advice in parentheses after every message
	// instead of "; use <want>", and noun names the kind of value in them
	// ("a number", "a memory size"). Resource amounts read this way.
	hint, noun string
	// whole allows only whole numbers: 1.5 and even 2.0 are errors.
	whole bool
	// min is the least value, allowed itself only if minOK.
	min   float64
	minOK bool
	// max is the largest value, after rounding up.
	max float64
	// tooLarge, when set, is the advice for a value over max.
	tooLarge string
	// roundUp rounds a fraction up to the next whole number (seconds).
	roundUp bool
	// forms, when set, reads strings with it instead of rejecting them:
	// groups "num" (a decimal number), "unit" (optional, a key of units)
	// and "plus" (a '+' suffix: at least this much).
	forms *regexp.Regexp
	units map[string]float64
	// absentOK allows an empty value, read as 0 (not requested).
	absentOK bool
}

// number is a number as a task file wrote it.
type number struct {
	value   float64 // in the field's unit (GiB for memory), rounded up if the rule says so
	text    string  // as written, for messages
	atLeast bool    // written with a '+' suffix, like 4+
}

// wholeNumber is the rule for a count from lo to maxInt.
func wholeNumber(lo int, example string) *numberRule {
	return &numberRule{
		want:  fmt.Sprintf("a whole number >= %d (e.g. %s)", lo, example),
		whole: true, min: float64(lo), minOK: true, max: maxInt,
	}
}

// replicaCount is the rule for a number of replicas: from lo to MaxReplicas.
func replicaCount(lo int, example string) *numberRule {
	r := wholeNumber(lo, example)
	r.max = MaxReplicas
	r.tooLarge = fmt.Sprintf("baton runs at most %d replicas of a service (use a whole number from %d to %d)", MaxReplicas, lo, MaxReplicas)
	return r
}

// seconds is the rule for a number of seconds: >= 0 if zeroOK, else > 0.
// Fractions are rounded up to the next whole second (SkyServe's schema
// allows any number; baton keeps whole seconds).
func seconds(zeroOK bool, example string) *numberRule {
	want := "a number of seconds > 0 (e.g. " + example + ")"
	if zeroOK {
		want = "a number of seconds >= 0 (e.g. " + example + ")"
	}
	return &numberRule{want: want, minOK: zeroOK, max: maxInt, roundUp: true}
}

// positive is the rule for a finite number > 0.
func positive(example string) *numberRule {
	return &numberRule{want: "a number > 0 (e.g. " + example + ")", max: math.MaxFloat64}
}

var (
	quantityRE = regexp.MustCompile(`^(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?P<plus>\+?)$`)
	memoryRE   = regexp.MustCompile(`^(?i)(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+) *(?P<unit>[kmgtp]b?)? *(?P<plus>\+?)$`)
	digitsRE   = regexp.MustCompile(`^[0-9]+$`)
)

// memoryHint lists the forms resources.memory takes.
const memoryHint = "use a size like 16, 16+, 16GB, 512MB or 1TB+; units are KB, MB, GB, TB and PB or K, M, G, T and P (GB meaning GiB), and a bare number is GB"

// memoryUnits are the memory units in GiB, lowercase. As in SkyPilot, GB is
// GiB and the others are powers of 1024 from it; 16G is 16GB.
var memoryUnits = map[string]float64{
	"":   1,
	"k":  1.0 / (1 << 20),
	"kb": 1.0 / (1 << 20),
	"m":  1.0 / (1 << 10),
	"mb": 1.0 / (1 << 10),
	"g":  1,
	"gb": 1,
	"t":  1 << 10,
	"tb": 1 << 10,
	"p":  1 << 20,
	"pb": 1 << 20,
}

// Bounds of resources.cpus and resources.memory (in GiB): far beyond any
// machine, they keep the numbers sane for placement (TaskSpec.Validate
// checks the same).
const (
	maxCPUs      = 1e5
	maxMemoryGiB = 1e8
)

// The rules of resources.cpus (4, 4+, 0.5, "2.5+") and resources.memory
// (16, 16GB, 512MB+). Absent means not requested.
var (
	cpusRule = &numberRule{
		noun: "a number", hint: "use 4 or 4+", forms: quantityRE,
		max: maxCPUs, tooLarge: fmt.Sprintf("no machine has that many; use at most %d (e.g. 4 or 4+)", int(maxCPUs)), absentOK: true,
	}
	memoryRule = &numberRule{
		noun: "a memory size", hint: memoryHint, forms: memoryRE, units: memoryUnits,
		max: maxMemoryGiB, tooLarge: "no machine has that much; use at most 1e8 GB (e.g. 16 or 512MB)", absentOK: true,
	}
)

// integer reads a whole number, or seconds rounded up, under rule.
func (p *taskParser) integer(field string, n ast.Node, line int, rule *numberRule) (int, bool) {
	num, ok := p.number(field, n, line, rule)
	return int(num.value), ok
}

// float reads a number under rule.
func (p *taskParser) float(field string, n ast.Node, line int, rule *numberRule) (float64, bool) {
	num, ok := p.number(field, n, line, rule)
	return num.value, ok
}

// quantity reads a resource amount such as 4, 4+ or 16GB under rule.
func (p *taskParser) quantity(field string, n ast.Node, line int, rule *numberRule) (Quantity, bool) {
	num, ok := p.number(field, n, line, rule)
	return Quantity{Value: num.value, AtLeast: num.atLeast}, ok
}

// number reads a number under rule: it resolves n, reads the value and how
// it was written, and checks the range. On a problem it reports it at n's
// line (line if n is empty) and returns ok=false.
func (p *taskParser) number(field string, n ast.Node, line int, rule *numberRule) (number, bool) {
	r, _ := p.resolve(n)
	line = lineAt(n, line)
	if r == nil {
		if rule.absentOK {
			return number{}, true
		}
		p.errorf(line, field, "has no value%s", rule.advice())
		return number{}, false
	}
	num, msg := rule.read(r)
	if msg == "" {
		msg = rule.check(num)
	}
	if msg != "" {
		p.errorf(line, field, "%s", msg)
		return number{}, false
	}
	if rule.roundUp {
		num.value = math.Ceil(num.value)
	}
	return num, true
}

// read reads a resolved node as a number, or says why it is not one.
func (rule *numberRule) read(r ast.Node) (number, string) {
	switch v := r.(type) {
	case *ast.IntegerNode:
		return number{value: floatOf(v), text: v.GetToken().Value}, ""
	case *ast.FloatNode:
		if rule.whole {
			return number{}, fmt.Sprintf("%s is not a whole number%s", v.GetToken().Value, rule.advice())
		}
		return number{value: v.Value, text: v.GetToken().Value}, ""
	case *ast.StringNode:
		if rule.forms != nil {
			return rule.readForm(v.Value)
		}
		return rule.readString(v)
	}
	if rule.hint != "" {
		return number{}, fmt.Sprintf("must be %s, got %s (%s)", rule.noun, describe(r), rule.hint)
	}
	return number{}, fmt.Sprintf("must be %s, got %s", rule.want, describe(r))
}

// readString reads a string where the rule takes only YAML numbers. Only
// a number too large for YAML is read (so the range check reports it);
// anything else says why it is not a number.
func (rule *numberRule) readString(v *ast.StringNode) (number, string) {
	s := v.Value
	quoted := v.Token != nil && (v.Token.Type == token.SingleQuoteType || v.Token.Type == token.DoubleQuoteType)
	switch {
	case !looksNumeric(s):
		return number{}, fmt.Sprintf("%q is not a number%s", s, rule.advice())
	case quoted:
		return number{}, fmt.Sprintf("%q is a string; use %s without quotes", s, rule.want)
	}
	// A plain number that YAML took for a string: one too large for it
	// (99999999999999999999, 1.0e+400), or an exponent without a '.'.
	f, err := strconv.ParseFloat(s, 64)
	if digitsRE.MatchString(strings.TrimLeft(s, "+-")) || (errors.Is(err, strconv.ErrRange) && math.IsInf(f, 0)) {
		return number{value: f, text: s}, ""
	}
	if rule.whole {
		return number{}, fmt.Sprintf("%s is not a number in YAML (write the digits out)%s", s, rule.advice())
	}
	return number{}, fmt.Sprintf("%s is not a number in YAML (write an exponent like 1.0e+3)%s", s, rule.advice())
}

// readForm reads a string with rule.forms, such as 4+ or 512MB.
func (rule *numberRule) readForm(s string) (number, string) {
	m := rule.forms.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return number{}, fmt.Sprintf("%q is not %s (%s)", s, rule.noun, rule.hint)
	}
	f, err := strconv.ParseFloat(m[rule.forms.SubexpIndex("num")], 64)
	if err != nil {
		return number{}, fmt.Sprintf("%q is not %s (%s)", s, rule.noun, rule.hint)
	}
	scale := 1.0
	if i := rule.forms.SubexpIndex("unit"); i >= 0 {
		scale = rule.units[strings.ToLower(m[i])]
	}
	return number{value: f * scale, text: s, atLeast: m[rule.forms.SubexpIndex("plus")] == "+"}, ""
}

// check says what is wrong with num's value, or returns "".
func (rule *numberRule) check(num number) string {
	v := num.value
	if rule.roundUp {
		v = math.Ceil(v)
	}
	switch {
	case math.IsNaN(num.value):
		return fmt.Sprintf("%s is not a number%s", num.text, rule.advice())
	case num.value < rule.min || (num.value == rule.min && !rule.minOK):
		if rule.hint != "" {
			bound := "more than"
			if rule.minOK {
				bound = "at least"
			}
			return fmt.Sprintf("%s is not allowed; it must be %s %s (%s)", num.text, bound, formatNumber(rule.min), rule.hint)
		}
		return fmt.Sprintf("%s is too small; use %s", num.text, rule.want)
	case v > rule.max:
		switch {
		case rule.tooLarge != "":
			return fmt.Sprintf("%s is too large; %s", num.text, rule.tooLarge)
		case rule.hint == "" && rule.max < math.MaxFloat64:
			return fmt.Sprintf("%s is too large; use %s up to %s", num.text, rule.want, formatNumber(rule.max))
		}
		return fmt.Sprintf("%s is too large%s", num.text, rule.advice())
	}
	return ""
}

// advice ends a message: "; use <want>", or " (<hint>)".
func (rule *numberRule) advice() string {
	if rule.hint != "" {
		return " (" + rule.hint + ")"
	}
	return "; use " + rule.want
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// looksNumeric reports whether s is a plain decimal number.
func looksNumeric(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return false
	}
	return strings.Trim(s, "0123456789.-+eE") == ""
}

// intOf is an integer node's value; ok is false if it does not fit an int64.
func intOf(v *ast.IntegerNode) (int64, bool) {
	switch x := v.Value.(type) {
	case int64:
		return x, true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	}
	return 0, false
}

// floatOf is an integer node's value as a float64.
func floatOf(v *ast.IntegerNode) float64 {
	switch x := v.Value.(type) {
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return 0
}
