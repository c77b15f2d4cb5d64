package csinode

// The node's RAM budget (Config.MemoryBudget) is handed out at publish: each volume's daemon gets a RAM cap
// (--memory) of what the volume asks, or of what is left of the budget when that is less, and gives it back when
// the volume goes. The daemons never share a counter: each keeps within its own cap exactly as a lone mount does,
// with no cross-process accounting on the write path, and a daemon that dies cannot leak budget (its grant is
// the plugin's, in the volume's record). The sum of the caps is the bound: all volumes together never hold more
// file data in RAM than the budget. The price is that RAM granted to one volume and not used by it is not
// lent to another; a volume that finds the budget used keeps its data on disk instead.

// noRAM is the --memory of a volume that finds the budget used: the smallest cap the daemon takes (it must be
// positive), and one that holds no file data, because the least RAM a file with data takes is an arena slot of
// 512 bytes (spool.ArenaMinSlot): every write goes to disk. It is not counted against the budget.
const noRAM = 1

// grant reserves RAM for volume id from the node's budget: ask, or what is left when that is less (noRAM when
// nothing is). It returns the daemon's cap. A volume's grant is given back by ungrant; granting it again replaces
// it.
func (d *Driver) grant(id string, ask int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.grants, id)
	left := d.cfg.MemoryBudget - d._granted()
	g := min(ask, left)
	if g < noRAM {
		return noRAM
	}
	d.grants[id] = g
	return g
}

// regrant takes back a grant a volume already holds (an adopted volume's, from its record), even past the
// budget: the daemon runs with that cap. It reports whether the budget still covers it.
func (d *Driver) regrant(id string, g int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if g <= noRAM {
		return true
	}
	d.grants[id] = g
	return d._granted() <= d.cfg.MemoryBudget
}

func (d *Driver) ungrant(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.grants, id)
}

// granted is the RAM granted to all volumes together.
func (d *Driver) granted() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d._granted()
}

func (d *Driver) _granted() int64 {
	var sum int64
	for _, g := range d.grants {
		sum += g
	}
	return sum
}
