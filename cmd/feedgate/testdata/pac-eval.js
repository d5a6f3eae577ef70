// Evaluates a PAC file with Node.js, as a browser would: the PAC helper
// functions it may call are defined here from their specification
// (Netscape's navigator proxy auto-config, as Mozilla implements it).
// Usage: node pac-eval.js FILE HOST...; prints "HOST<TAB>RESULT" per host.
'use strict';
const fs = require('fs');
const vm = require('vm');

const sandbox = {
  dnsDomainIs: (host, domain) =>
    host.length >= domain.length && host.substring(host.length - domain.length) === domain,
  shExpMatch: (str, shexp) => {
    const re = shexp.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
    return new RegExp('^' + re + '$').test(str);
  },
  isPlainHostName: (host) => host.indexOf('.') < 0,
  localHostOrDomainIs: (host, hostdom) => host === hostdom || hostdom.lastIndexOf(host + '.', 0) === 0,
  // Name resolution must not happen in a PAC feedgate writes: fail loudly.
  dnsResolve: () => { throw new Error('the PAC file resolved a name'); },
  isResolvable: () => { throw new Error('the PAC file resolved a name'); },
  isInNet: () => { throw new Error('the PAC file resolved a name'); },
  myIpAddress: () => { throw new Error('the PAC file asked for the client address'); },
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[2], 'utf8'), sandbox, { filename: process.argv[2] });
if (typeof sandbox.FindProxyForURL !== 'function') {
  throw new Error('no FindProxyForURL in the PAC file');
}
for (const host of process.argv.slice(3)) {
  const url = 'https://' + host + '/';
  console.log(host + '\t' + sandbox.FindProxyForURL(url, host));
}
