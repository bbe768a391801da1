#!/usr/bin/env node
// The demo is not built yet; see issue 10. Until it exists the README's run command says so and exits 0.
console.log('The @x demo is not built yet: the packages it wires together are still being written.');
