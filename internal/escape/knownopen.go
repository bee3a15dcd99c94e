package escape

// known is an attack that still works on a driver, and what will close it.
type known struct {
	driver  string // runtime.Capabilities.Name
	check   string
	who     Who
	fixedBy string
}

// knownOpen is every attack the battery finds open today. Each entry still
// fails the test ("known open until ..."), so the suite stays red until the
// fix lands; an entry whose attack is blocked fails it too, so the change
// that closes an attack must take its entry off this list. Empty it, do not
// grow it: a new escape is fixed, not listed.
var knownOpen = []known{}
