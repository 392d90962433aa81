// Package codecheck holds tests of the code base itself, run with the
// rest of the suite: no function longer than MaxFunctionLines without a
// reason written above it, no type assertion to a concrete object store
// outside package objects, and snake_case JSON keys.
package codecheck

// MaxFunctionLines is the longest a function may be without a comment
// above it that says why it is long (with the words "long because").
const MaxFunctionLines = 80
