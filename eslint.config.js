// ESLint: typescript-eslint's recommended type-checked rules over src, harness, scripts and test.
// The tuning below is where a rule fights the house style rather than a defect, then the import
// boundaries between folders; each says why.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'bench/', 'logs/', 'test-results/', 'chaos/', 'src/monitoring/assets/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `void promise` marks a deliberate fire-and-forget (timers, event handlers); a floating
      // promise without it is the defect this rule exists for.
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      // Express 5 and ioredis/EventEmitter handlers take async functions whose promise nobody
      // awaits by design; their rejections are caught inside.
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      // `_` marks a parameter a signature needs but the body does not use.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Numbers and booleans in messages read fine; objects still may not be stringified by accident.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
      // Interfaces return promises (close(), cleanups, connectors); an implementation with nothing
      // to await is still written async so a throw becomes a rejection, as callers expect.
      '@typescript-eslint/require-await': 'off',
      // Dependencies are plain closures in option objects, declared with method syntax in their
      // interfaces; nothing passed around is a class method that needs its `this`.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    // Tests assert on what real processes answer: HTTP bodies and JSON log lines, untyped by
    // nature. Reading them is what a test does; the checks are the expectations.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    // What tests and scripts share lives in harness/, so neither folder changes under the other.
    files: ['test/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/scripts/**'], message: 'Shared code belongs in harness/.' }] }] },
  },
  {
    // What scripts and tests share lives in harness/, so neither folder changes under the other.
    files: ['scripts/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/test/**'], message: 'Shared code belongs in harness/.' }] }] },
  },
  {
    // The harness serves both tests and scripts, so it may depend on neither.
    files: ['harness/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/test/**', '**/scripts/**'], message: 'The harness imports only src/ and itself.' }] }],
    },
  },
  {
    // The lease core is what devices, queues and metrics build on; it learns of them through its own interfaces.
    files: ['src/cluster/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/devices/*', '**/queues/*', '**/metrics/*'], message: 'src/cluster/ declares the interface it needs instead.' }] },
      ],
    },
  },
  {
    // The event log sits on the lease core alone: the layers above hand it events and read them.
    files: ['src/events/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/devices/*', '**/queues/*', '**/metrics/*', '**/http/*', '**/monitoring/*', '**/store/*', '**/config/*'],
              message: 'src/events/ imports only src/cluster/ and src/shared/; it declares what else it needs.',
            },
          ],
        },
      ],
    },
  },
  {
    // Webhooks read the event log and the store and POST through the guarded client; the API and
    // main.ts above them call in, and what they count is declared here (WebhookMetrics).
    files: ['src/webhooks/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/devices/*', '**/queues/*', '**/metrics/*', '**/http/*', '**/monitoring/*', '**/config/*'],
              message: 'src/webhooks/ imports only src/events/, src/store/, src/cluster/ and src/shared/; it declares what else it needs.',
            },
          ],
        },
      ],
    },
  },
  {
    // Plain JavaScript (this file, the pm2 ecosystem) is not in the TypeScript project.
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { parserOptions: { projectService: false, project: null } },
  },
  {
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    languageOptions: { globals: { module: 'writable', require: 'readonly', process: 'readonly', __dirname: 'readonly', console: 'readonly' } },
  },
);
