package conf

import "io"

// ioEOF is what yaml.Decoder returns for an empty document.
var ioEOF = io.EOF
