// `npm run docs:api`: writes the README's API section from the route declarations (the same
// ones /openapi.json comes from).
import { readFileSync, writeFileSync } from 'node:fs';
import { apiDocsMarkdown, declaredRoutes, withApiDocs } from '../src/http/api-docs.js';

const routes = declaredRoutes();
writeFileSync('README.md', withApiDocs(readFileSync('README.md', 'utf8'), apiDocsMarkdown(routes)));
console.log(`README.md API section: ${routes.length + 1} calls`);
