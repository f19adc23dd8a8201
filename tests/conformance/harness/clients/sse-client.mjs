// The TypeScript SDK's SSEClientTransport (the 2024-11-05 HTTP+SSE transport) against one server, as an old
// SSE-only client uses it: node sse-client.mjs <stream URL>, the access token in MCP_TOKEN (a test CA for https
// in NODE_EXTRA_CA_CERTS). Lists the tools, calls count_to(3) with progress and whoami, and prints one JSON
// line of what it saw: the messages as the transport received them ("received", in wire order) and the
// progress updates as the SDK handed them to the caller. Any failure is one line on stderr and exit status 1.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';

const url = new URL(process.argv[2]);
const token = process.env.MCP_TOKEN;

// Every request of the transport (the stream's GET and each message POST) carries the token.
function withToken(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('Authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

try {
  const client = new Client({ name: 'ts-sse-client', version: '1.0.0' });
  const transport = new SSEClientTransport(url, { fetch: withToken });
  await client.connect(transport);
  const received = [];
  const deliver = transport.onmessage;
  transport.onmessage = (message) => {
    received.push(message.method ?? (message.result ? 'result' : 'error'));
    deliver(message);
  };
  const tools = (await client.listTools()).tools.map((tool) => tool.name);
  const started = Date.now();
  const progress = [];
  const counted = await client.callTool({ name: 'count_to', arguments: { n: 3 } }, undefined, {
    onprogress: (update) => progress.push({ progress: update.progress, total: update.total, at: Date.now() - started }),
  });
  const finished = Date.now() - started;
  const whoami = await client.callTool({ name: 'whoami', arguments: {} });
  console.log(
    JSON.stringify({
      server: client.getServerVersion(),
      tools,
      counted: counted.content.map((part) => part.text),
      progress,
      finished,
      received,
      whoami: JSON.parse(whoami.content[0].text),
    }),
  );
  await client.close();
} catch (error) {
  console.error(`sse-client: ${error?.stack ?? error}`);
  process.exit(1);
}
