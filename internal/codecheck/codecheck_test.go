package codecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// goFile is one parsed Go file of the module.
type goFile struct {
	path string // relative to the module root
	ast  *ast.File
}

// moduleFiles parses every Go file of the module, tests included.
func moduleFiles(t *testing.T) (*token.FileSet, []goFile) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	fset := token.NewFileSet()
	var files []goFile
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, goFile{rel, f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fset, files
}

// TestFunctionLength finds every function longer than MaxFunctionLines
// whose doc comment does not say why it is long.
func TestFunctionLength(t *testing.T) {
	fset, files := moduleFiles(t)
	for _, f := range files {
		for _, decl := range f.ast.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines <= MaxFunctionLines {
				continue
			}
			if fn.Doc != nil && strings.Contains(strings.ToLower(fn.Doc.Text()), "long because") {
				continue
			}
			t.Errorf("%s:%d: %s is %d lines long: split it into named phases, or say above it why it is long (\"... long because ...\")",
				f.path, fset.Position(fn.Pos()).Line, fn.Name.Name, lines)
		}
	}
}

// TestNoConcreteStoreAssertions: optional abilities of an object store
// are found by asserting to the small interfaces of package objects,
// never to a concrete store type.
func TestNoConcreteStoreAssertions(t *testing.T) {
	fset, files := moduleFiles(t)
	for _, f := range files {
		if filepath.Dir(f.path) == "objects" {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			var types []ast.Expr
			switch x := n.(type) {
			case *ast.TypeAssertExpr:
				types = append(types, x.Type)
			case *ast.CaseClause:
				types = append(types, x.List...)
			}
			for _, typ := range types {
				if star, ok := typ.(*ast.StarExpr); ok {
					if sel, ok := star.X.(*ast.SelectorExpr); ok {
						if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "objects" {
							t.Errorf("%s:%d: type assertion to *objects.%s: assert to the interface of the ability instead (objects.Repacker, objects.FileChecker, ...)",
								f.path, fset.Position(typ.Pos()).Line, sel.Sel.Name)
						}
					}
				}
			}
			return true
		})
	}
}

// snakeCase is the form of every JSON key sbuml writes.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// foreignJSON are the files whose JSON is another program's protocol,
// with its own keys: QEMU's QMP.
var foreignJSON = map[string]bool{"vmm/qmp.go": true, "vmm/migrate.go": true}

// TestJSONKeysSnakeCase finds struct fields whose JSON key is not
// snake_case.
func TestJSONKeysSnakeCase(t *testing.T) {
	fset, files := moduleFiles(t)
	for _, f := range files {
		if foreignJSON[filepath.ToSlash(f.path)] {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			field, ok := n.(*ast.Field)
			if !ok || field.Tag == nil {
				return true
			}
			tag, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				return true
			}
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
			if name != "" && name != "-" && !snakeCase.MatchString(name) {
				t.Errorf("%s:%d: JSON key %q is not snake_case", f.path, fset.Position(field.Pos()).Line, name)
			}
			return true
		})
	}
}
