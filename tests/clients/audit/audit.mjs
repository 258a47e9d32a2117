// The GraphQL-over-HTTP audit (graphql-http's serverAudits) against a running parley:
// `node audit/audit.mjs http://127.0.0.1:PORT/graphql`. Prints every audit that is not ok,
// then the counts; exits 1 on any error, warning or notice (a failed MAY).
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit/audit.mjs URL');
  process.exit(2);
}
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const audit of serverAudits({ url })) {
  const result = await audit.fn();
  counts[result.status] += 1;
  if (result.status !== 'ok') {
    let body = '';
    try {
      body = await result.response.text();
    } catch {
      // the body was read by the audit already
    }
    console.log(`${result.status.toUpperCase()} ${audit.id} ${audit.name}: ${result.reason}`);
    if (result.response) {
      console.log(`  -> ${result.response.status} ${result.response.headers.get('content-type')} ${body.slice(0, 300)}`);
    }
  }
}
console.log(
  `graphql-http audit: ${counts.ok} ok, ${counts.notice} notices, ${counts.warn} warnings, ${counts.error} errors`,
);
process.exit(counts.notice + counts.warn + counts.error === 0 ? 0 : 1);
