package dockerpool_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The library keeps a layout a reader can follow (DEVELOPERS.md): one
// concern per file, no file over 500 lines, no function over 60.
const (
	maxFileLines = 500
	maxFuncLines = 60
)

func TestLayoutNoLibraryFileOrFunctionIsTooLong(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(src), "\n"); n > maxFileLines {
			t.Errorf("%s has %d lines; keep library files under %d (split it by concern)", name, n, maxFileLines)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n > maxFuncLines {
				t.Errorf("%s: %s has %d lines; keep library functions under %d", fset.Position(fd.Pos()), fd.Name.Name, n, maxFuncLines)
			}
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("only %d library files found: is the test running in the package's directory?", checked)
	}
}
