import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'

// The console is served by Flask at /ui/ from console/dist, same origin as the API.
// In development, Vite proxies the API paths to the Flask app on :8000.
const backend = process.env.CONSOLE_BACKEND ?? 'http://localhost:8000'

export default defineConfig({
  base: '/ui/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/webhook': { target: backend, changeOrigin: true },
      '/conversations': { target: backend, changeOrigin: true },
      '/held': { target: backend, changeOrigin: true },
      '/deliveries': { target: backend, changeOrigin: true },
      '/generations': { target: backend, changeOrigin: true },
      // Server-sent events: keep the connection open, no buffering.
      '/events': { target: backend, changeOrigin: true, timeout: 0, proxyTimeout: 0 },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.spec.ts'],
    setupFiles: ['tests/setup.ts'],
    restoreMocks: true,
    unstubGlobals: true,
  },
})
